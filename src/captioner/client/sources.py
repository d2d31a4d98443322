"""The images a caller gives, as a name and a way to get their bytes.

``caption`` takes a path (``str`` or path-like), bytes, or a binary file object;
``caption_many`` takes paths or ``(name, bytes)`` pairs, since each result must carry a
name. A file is read when its turn comes (on a worker thread, so a slow disk does not
stall the other requests), and read whole, so that a retry can send it again.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath
from typing import IO, Any, Union

__all__ = ["CollectionItem", "ImageInput", "Source", "collection_source", "image_source"]

# What ``caption`` accepts, and what ``caption_many``'s iterable yields.
ImageInput = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes]]
CollectionItem = Union[str, "os.PathLike[str]", tuple[str, bytes | bytearray | memoryview]]

_BYTES = (bytes, bytearray, memoryview)


@dataclass(frozen=True)
class Source:
    """One image to send.

    Attributes:
        name: the image's name as the caller gave it (a path as listed, a key), or "image".
        read: returns the bytes; may block (a file) when ``blocking`` is set.
        blocking: whether ``read`` touches a file (run it off the event loop).
    """

    name: str
    read: Callable[[], bytes]
    blocking: bool

    @property
    def filename(self) -> str:
        """The name of the multipart part's file: the last component of ``name``."""
        return PurePath(self.name).name or "image"


def image_source(image: ImageInput) -> Source:
    """``caption``'s argument: a path, bytes, or a binary file object (read from where it is).

    Raises:
        TypeError: anything else (a text file, a number).
    """
    if isinstance(image, _BYTES):
        data = bytes(image)
        return Source("image", lambda: data, blocking=False)
    if isinstance(image, (str, os.PathLike)):
        return _path_source(image)
    if isinstance(image, io.TextIOBase):
        raise TypeError(f"open the image in binary mode ('rb'): {image!r} is a text file")
    read = getattr(image, "read", None)
    if callable(read):
        name = getattr(image, "name", None)
        return Source(
            os.fsdecode(name) if isinstance(name, (str, bytes)) else "image",
            lambda: _bytes_from(read(), image),
            blocking=True,
        )
    raise TypeError(f"an image is a path, bytes or a binary file, not {type(image).__name__}")


def collection_source(item: CollectionItem) -> Source:
    """One item of ``caption_many``'s iterable: a path, or a ``(name, bytes)`` pair.

    Raises:
        TypeError: anything else (bytes without a name, a file object).
    """
    if isinstance(item, (str, os.PathLike)):
        return _path_source(item)
    if isinstance(item, tuple) and len(item) == 2:
        name, data = item
        if isinstance(name, str) and isinstance(data, _BYTES):
            payload = bytes(data)
            return Source(name, lambda: payload, blocking=False)
    raise TypeError(
        "caption_many takes paths or (name, bytes) pairs, "
        f"not {type(item).__name__}" + (" (bytes need a name)" if isinstance(item, _BYTES) else "")
    )


def _path_source(path: str | os.PathLike[str]) -> Source:
    name = os.fspath(path)

    def read() -> bytes:
        with open(name, "rb") as file:
            return file.read()

    return Source(name, read, blocking=True)


def _bytes_from(data: Any, image: object) -> bytes:
    if not isinstance(data, _BYTES):
        raise TypeError(f"{image!r} is not opened in binary mode ('rb'): it gave {type(data)}")
    return bytes(data)
