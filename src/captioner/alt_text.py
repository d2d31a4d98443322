"""A caption written as alt text where photo tools look for it: in an image, or in a sidecar.

The fields (exiftool's names, which also say the group):

- ``XMP-dc:Description``, the XMP description (language x-default): what Lightroom, Bridge,
  digiKam, darktable, WordPress and most catalogues show as the caption;
- ``XMP-iptcCore:AltTextAccessibility`` (x-default): the IPTC Photo Metadata Standard's
  alt text, meant for screen readers;
- ``IFD0:ImageDescription``: EXIF's description, read by file managers and older tools;
- ``IPTC:Caption-Abstract``: the IPTC-IIM caption (2:120), written in UTF-8 with the IIM
  ``CodedCharacterSet`` saying so, for newsroom and archive software.

A format gets only the fields it has a standard place for (:data:`FIELDS_BY_FORMAT`):
exiftool would write IPTC-IIM into a PNG as a non-standard text chunk, and drops it from
WebP, so those two carry XMP and EXIF. A sidecar is an XMP file: it carries the two XMP
fields, since EXIF and IPTC-IIM blocks live only inside images.

Safety: every write goes to a temporary file beside the destination (the original's bytes
copied, then edited by exiftool, which rewrites metadata blocks and never the pixels), which
is flushed to disk and renamed over the destination, so a kill leaves the old file or the
new one, never half of one. The original is written only by :meth:`AltTextWriter.embed_in_place`.
An image that already carries a description in any field is left alone unless the caller
says ``overwrite``. Each call returns an :class:`AltTextOutcome`; one image's trouble is that
image's outcome, never an exception.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from captioner.errors import ConfigurationError, MetadataToolError
from captioner.exiftool import Exiftool

__all__ = [
    "EXIF_DESCRIPTION",
    "FIELDS",
    "FIELDS_BY_FORMAT",
    "IPTC_CAPTION",
    "XMP_ALT_TEXT",
    "XMP_DESCRIPTION",
    "XMP_FIELDS",
    "AltTextOutcome",
    "AltTextStatus",
    "AltTextWriter",
    "mirrored_path",
    "sidecar_path",
    "tag_arguments",
]

XMP_DESCRIPTION = "XMP-dc:Description"
XMP_ALT_TEXT = "XMP-iptcCore:AltTextAccessibility"
EXIF_DESCRIPTION = "IFD0:ImageDescription"
IPTC_CAPTION = "IPTC:Caption-Abstract"
FIELDS = (XMP_DESCRIPTION, XMP_ALT_TEXT, EXIF_DESCRIPTION, IPTC_CAPTION)
XMP_FIELDS = (XMP_DESCRIPTION, XMP_ALT_TEXT)

FIELDS_BY_FORMAT: dict[str, tuple[str, ...]] = {
    "JPEG": FIELDS,
    "TIFF": FIELDS,
    "PNG": (*XMP_FIELDS, EXIF_DESCRIPTION),
    "WEBP": (*XMP_FIELDS, EXIF_DESCRIPTION),
    "GIF": XMP_FIELDS,
}
"""The fields written into each format exiftool reports (``File:FileType``, from content)."""

_SUPPORTED = "JPEG, PNG, TIFF, WebP, GIF"
_TEMP_MARK = ".captioner-tmp"

AltTextStatus = Literal["written", "skipped", "error"]


@dataclass(frozen=True)
class AltTextOutcome:
    """What happened to one image.

    Attributes:
        image: the image as the caller named it.
        status: ``written``; ``skipped`` (it already had a description and overwriting was
            not asked for); ``error`` (this image alone failed, ``detail`` says why).
        destination: the file written (the copy, the image itself or the sidecar), or None.
        fields: the fields written; for a skip, the fields that already held a description.
        detail: for a skip, the description found; for an error, the reason.
    """

    image: Path
    status: AltTextStatus
    destination: Path | None = None
    fields: tuple[str, ...] = ()
    detail: str | None = None


class _ImageFailure(Exception):
    """One image cannot be written, for the reason given; becomes its ``error`` outcome."""


@dataclass(frozen=True)
class _Found:
    """What a file holds already: exiftool's type and extension, and non-blank descriptions."""

    file_type: str
    extension: str
    descriptions: dict[str, str]


class AltTextWriter:
    """Writes captions into images or sidecars through one long-lived exiftool process.

    Use it as a context manager: the exiftool process ends with it.

    Raises:
        MetadataToolError: from the constructor when exiftool is not installed.
    """

    def __init__(self, *, executable: str = "exiftool", timeout_s: float = 60.0) -> None:
        # How IPTC-IIM text without a CodedCharacterSet is read, and how ours is written.
        self._exiftool = Exiftool(
            executable, common_args=("-charset", "iptc=UTF8"), timeout_s=timeout_s
        )

    def __enter__(self) -> AltTextWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the exiftool process."""
        self._exiftool.close()

    def embed(
        self, image: Path, caption: str, destination: Path, *, overwrite: bool = False
    ) -> AltTextOutcome:
        """Write ``caption`` into a copy of ``image`` at ``destination`` (replaced if there).

        The copy has the original's bytes but for its metadata blocks; the original is only
        read. Skipped when the original already carries a description, unless ``overwrite``.

        Raises:
            ConfigurationError: ``destination`` is ``image`` itself; that needs
                :meth:`embed_in_place`, so originals are never changed by mistake.
        """
        if _absolute(image) == _absolute(destination) or _same_file(image, destination):
            raise ConfigurationError(
                f"{destination} is the image itself; writing into originals must be asked "
                "for explicitly (in place)"
            )
        return self._embed(image, caption, destination, overwrite)

    def embed_in_place(
        self, image: Path, caption: str, *, overwrite: bool = False
    ) -> AltTextOutcome:
        """Write ``caption`` into ``image`` itself (atomically: a temporary copy renamed over it).

        A symbolic link is followed: the file it points to is the image that changes.
        """
        return self._embed(image, caption, Path(os.path.realpath(image)), overwrite)

    def write_sidecar(
        self,
        image: Path,
        caption: str,
        destination: Path | None = None,
        *,
        overwrite: bool = False,
    ) -> AltTextOutcome:
        """Write ``caption`` into an XMP sidecar (by default :func:`sidecar_path` of ``image``).

        An existing sidecar is edited, keeping its other properties (ratings, keywords).
        Skipped when the image or the existing sidecar already carries a description,
        unless ``overwrite``. The image is only read.
        """
        target = destination if destination is not None else sidecar_path(image)

        def write() -> AltTextOutcome:
            text = _clean(caption)
            skip = self._skip(image, self._read(image), overwrite)
            if skip is None and target.exists():
                skip = self._skip(image, self._read(target), overwrite)
            if skip is not None:
                return skip
            existing = target if target.exists() else None
            self._replace(target, copy_from=existing, extension="xmp", fields=XMP_FIELDS, text=text)
            return AltTextOutcome(image, "written", target, XMP_FIELDS)

        return _outcome(image, write)

    def _embed(
        self, image: Path, caption: str, destination: Path, overwrite: bool
    ) -> AltTextOutcome:
        def write() -> AltTextOutcome:
            text = _clean(caption)
            found = self._read(image)
            fields = FIELDS_BY_FORMAT.get(found.file_type)
            if fields is None:
                raise _ImageFailure(
                    f"{found.file_type or 'unknown'} files cannot be given embedded alt text "
                    f"(supported: {_SUPPORTED}); a sidecar works for any image"
                )
            skip = self._skip(image, found, overwrite)
            if skip is not None:
                return skip
            self._replace(
                destination, copy_from=image, extension=found.extension, fields=fields, text=text
            )
            return AltTextOutcome(image, "written", destination, fields)

        return _outcome(image, write)

    def _read(self, path: Path) -> _Found:
        """The file's type and the descriptions it holds, in any of :data:`FIELDS`."""
        # "*" also matches the lang-alt fields' other languages ("XMP-dc:Description-fr").
        wanted = [f"-{field}*" for field in FIELDS]
        argument = _argument(path)
        reply = self._exiftool.run(
            ["-j", "-G1", "-File:FileType", "-File:FileTypeExtension", *wanted, argument]
        )
        try:
            records: list[dict[str, Any]] = json.loads(reply.stdout or "[]")
        except ValueError as exc:
            raise _ImageFailure(f"exiftool's answer is not JSON: {reply.stdout[:200]!r}") from exc
        record = records[0] if records else {}
        error = record.get("ExifTool:Error") or (reply.message(argument) if reply.status else None)
        if error:
            raise _ImageFailure(str(error))
        descriptions = {
            key: str(value)
            for key, value in record.items()
            if any(key == field or key.startswith(field + "-") for field in FIELDS)
            and str(value).strip()
        }
        return _Found(
            file_type=str(record.get("File:FileType", "")),
            extension=str(record.get("File:FileTypeExtension", "")).lower(),
            descriptions=descriptions,
        )

    @staticmethod
    def _skip(image: Path, found: _Found, overwrite: bool) -> AltTextOutcome | None:
        if overwrite or not found.descriptions:
            return None
        first = next(iter(found.descriptions.values()))
        return AltTextOutcome(image, "skipped", None, tuple(found.descriptions), first)

    def _replace(
        self,
        destination: Path,
        *,
        copy_from: Path | None,
        extension: str,
        fields: tuple[str, ...],
        text: str,
    ) -> None:
        """Write ``destination`` whole or not at all: a temporary file beside it, renamed.

        The temporary name ends in the format's own extension (exiftool refuses to write a
        JPEG named ``.png``, and creates an XMP file from nothing only under ``.xmp``).
        """
        destination.parent.mkdir(parents=True, exist_ok=True)
        temp = _absolute(destination).with_name(
            f".{secrets.token_hex(6)}{_TEMP_MARK}.{extension or 'tmp'}"
        )
        try:
            if copy_from is not None:
                shutil.copy(copy_from, temp)  # the bytes and the permission bits
            argument = _argument(temp)
            reply = self._exiftool.run(
                ["-overwrite_original", *tag_arguments(fields, text), argument]
            )
            if reply.status != 0:
                raise _ImageFailure(reply.message(argument) or "exiftool could not write it")
            with open(temp, "rb+") as written:
                os.fsync(written.fileno())
            os.replace(temp, destination)
        finally:
            temp.unlink(missing_ok=True)
            temp.with_name(temp.name + "_exiftool_tmp").unlink(missing_ok=True)


def tag_arguments(fields: tuple[str, ...], text: str) -> list[str]:
    """exiftool's arguments that set every field in ``fields`` to ``text``.

    The lang-alt XMP fields get the x-default entry (other languages are kept); IPTC-IIM
    also gets ``CodedCharacterSet`` = UTF-8, so readers decode the text right.
    """
    arguments = [f"-{field}={text}" for field in fields]
    if IPTC_CAPTION in fields:
        arguments.append("-IPTC:CodedCharacterSet=UTF8")
    return arguments


def sidecar_path(image: Path, *, metadata_dir: Path | None = None, root: Path = Path()) -> Path:
    """Where ``image``'s sidecar goes: ``photo.jpg`` gives ``photo.jpg.xmp``.

    Beside the image, or under ``metadata_dir`` at the image's path relative to ``root``
    (:func:`mirrored_path`). The full name is kept so ``photo.jpg`` and ``photo.png`` do not
    share a sidecar; digiKam, darktable and exiftool read this form.
    """
    base = image if metadata_dir is None else mirrored_path(image, metadata_dir, root=root)
    return base.with_name(base.name + ".xmp")


def mirrored_path(image: Path, metadata_dir: Path, *, root: Path = Path()) -> Path:
    """``image``'s place under ``metadata_dir``: its path relative to ``root`` (default: here).

    An image outside ``root`` keeps its whole absolute path under ``metadata_dir``, so no
    path climbs out of it with ``..``.
    """
    absolute, base = _absolute(image), _absolute(root)
    try:
        relative = absolute.relative_to(base)
    except ValueError:
        relative = absolute.relative_to(absolute.anchor)
    return metadata_dir / relative


def _outcome(image: Path, write: Callable[[], AltTextOutcome]) -> AltTextOutcome:
    """Run one image's write; its own failure (or exiftool's on it) becomes its outcome."""
    try:
        outcome = write()
    except (_ImageFailure, MetadataToolError, OSError) as exc:
        return AltTextOutcome(image, "error", detail=str(exc))
    return outcome


def _clean(caption: str) -> str:
    """The caption on one line: exiftool reads one argument a line, and alt text is one line."""
    text = " ".join(caption.split())
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cc")
    if not text:
        raise _ImageFailure("the caption is empty: nothing to write")
    return text


def _argument(path: Path) -> str:
    """``path`` as an exiftool argument: absolute (never read as an option), on one line."""
    text = str(_absolute(path))
    if "\n" in text or "\r" in text:
        raise _ImageFailure("a file name with a line break cannot be passed to exiftool")
    return text


def _absolute(path: Path) -> Path:
    """Absolute, with ``..`` folded, without following links (a link is written, not its target)."""
    return Path(os.path.abspath(path))


def _same_file(first: Path, second: Path) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False
