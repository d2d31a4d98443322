"""Schemathesis set-up for ``test_schema.py``: image parts are real images.

The document lists the media types an ``image`` part may hold (its multipart
``encoding``); schemathesis draws such a part from the strategy registered for its media
type, so here each type gets real images of that format, of varied sizes and colours.
Arbitrary bytes stay covered by the explicit tests of undecodable uploads.
"""

from __future__ import annotations

import io

import schemathesis
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
