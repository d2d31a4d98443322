"""What ``captioner caption`` was asked to caption, as a lazy stream of image sources.

Arguments (and the lines of ``--from-list``) are read the way a person means them:

- a file is captioned, whatever it holds (a file that is not an image gets an error row:
  the person named it);
- a directory is walked recursively in a stable order (entries sorted by name, each
  directory's files and subdirectories together), hidden files and directories skipped,
  and only the files whose first bytes are an image's are taken (``photo.txt`` that is a
  JPEG is captioned, ``notes.jpg`` that is text is not);
- a pattern with ``*``, ``?`` or ``[`` that names no file is expanded here (quote it, so
  the shell does not hit its argument limit), matches sorted, ``**`` recursive, and
  filtered like a directory's files;
- anything else is kept as named, and gets a "No such file or directory" row.

Nothing is listed ahead: a million files are never in memory at once (only each
directory's own names, to sort them).
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

from captioner.pipeline import ImageSource
from captioner.preprocessing import detect_format

__all__ = ["iter_sources", "looks_like_image", "read_list"]

_GLOB_CHARS = frozenset("*?[")
_HEAD_BYTES = 16  # enough for every signature detect_format knows


def iter_sources(items: Iterable[str]) -> Iterator[ImageSource]:
    """The images that ``items`` (paths, directories, patterns) name, lazily, in order."""
    for item in items:
        path = Path(item)
        if path.is_dir():
            yield from _walk(path)
        elif path.exists() or not _GLOB_CHARS.intersection(item):
            yield ImageSource(name=item, path=path)
        else:
            for match in sorted(glob.iglob(item, recursive=True)):
                matched = Path(match)
                if matched.is_dir():
                    yield from _walk(matched)
                elif looks_like_image(matched):
                    yield ImageSource(name=match, path=matched)


def read_list(list_file: str) -> Iterator[str]:
    """The lines of a list file (``-``: standard input), one path each, blanks skipped.

    Only the line ending is removed: a path may start or end with spaces.
    """
    if list_file == "-":
        yield from _lines(sys.stdin)
        return
    with open(list_file, encoding="utf-8") as stream:
        yield from _lines(stream)


def looks_like_image(path: Path) -> bool:
    """Whether the file's first bytes are those of an image format captioner reads."""
    try:
        with path.open("rb") as stream:
            return detect_format(stream.read(_HEAD_BYTES)) is not None
    except OSError:
        return False


def _walk(directory: Path) -> Iterator[ImageSource]:
    """A directory's images, recursively, sorted by name, hidden entries skipped.

    Symbolic links to files are followed; links to directories are not (a link to a
    parent would never end).
    """
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(path)
        elif entry.is_file() and looks_like_image(path):
            yield ImageSource(name=entry.path, path=path)


def _lines(stream: TextIO) -> Iterator[str]:
    for line in stream:
        path = line.rstrip("\r\n")
        if path:
            yield path
