"""Schemathesis set-up for ``test_schema.py``'s full run: the files it uploads are images.

The document says what JSON Schema can about an ``image`` part (a file of at least one
byte, and the image types it may declare, its multipart ``encoding``); it cannot say that
the bytes must be an image. So each of those types gets a strategy of real images of that
format, 1x1 to 64x64 pixels, any colour, which schemathesis draws for every file it means
to be valid. The skips of ``schemathesis_hooks`` apply too.
"""

from __future__ import annotations

import io

import schemathesis
import schemathesis_hooks  # noqa: F401  (registers its hooks)
from hypothesis import strategies as st
from PIL import Image

from captioner.api.openapi import IMAGE_MEDIA_TYPES


def _encode(fmt: str, size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


def images(fmt: str) -> st.SearchStrategy[bytes]:
    """Images of one format, 1x1 to 64x64 pixels, any colour."""
    side = st.integers(1, 64)
    channel = st.integers(0, 255)
    return st.builds(
        _encode, st.just(fmt), st.tuples(side, side), st.tuples(channel, channel, channel)
    )


for media_type in IMAGE_MEDIA_TYPES:
    schemathesis.openapi.media_type(media_type, images(media_type.split("/")[1].upper()))
