"""Read the ``image`` parts of a ``multipart/form-data`` request body into memory.

Why not FastAPI's ``UploadFile``: Starlette spools every file part over 1 MB to a
temporary file (nothing a client sends should touch the disk, and a read-only container
has little of it), and treats a part without a ``filename`` as a text field, mangling
binary data. Here the body streams through python-multipart's parser into memory (the
request's size is already capped and admitted against the upload budget, see
:class:`~captioner.api.middleware.UploadGuardMiddleware`).

A part named ``image`` is a file when it has a file name or a non-text ``Content-Type``;
otherwise it is a plain form field (MAX's "image sent as a text field"). A request with no
image file is MAX's 400 for a missing image; one with files and a form field under that
name is a 400 that says so (the document promises files only, and a form value answered
as an unreadable image would hide the client's mistake); an empty file is a 400 too (the
document says a file holds at least one byte). An image part over its own limit (a batch
request's, see :func:`image_limit`) is read to its end but not kept: it gets its own 413 in
the answer. Parts with other names are skipped without being kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from captioner.api.errors import MAX_MISSING_IMAGE
from captioner.api.middleware import BodyLimit
from captioner.config import Settings
from captioner.errors import InvalidImageError, InvalidRequestError

__all__ = ["ImagePart", "batch_limit", "image_limit", "read_images"]

FIELD = "image"


def image_limit(settings: Settings) -> BodyLimit:
    """The limit of one image: the body of a one-image request, each image of a batch."""
    return BodyLimit(
        settings.max_upload_bytes,
        what="the upload",
        scope="for one image",
        instead="send a smaller image",
        setting="max_upload_bytes",
    )


def batch_limit(settings: Settings) -> BodyLimit:
    """The limit of a batch request's whole body, so that several photos fit in one."""
    return BodyLimit(
        settings.max_batch_upload_bytes,
        what="the batch request",
        scope="for all its images together",
        instead="send fewer images per request",
        setting="max_batch_upload_bytes",
    )


@dataclass
class ImagePart:
    """One uploaded image: the client's file name (if any) and its bytes, or, for an image
    over its limit, the error it is answered with (and no bytes)."""

    filename: str | None
    data: bytes
    error: InvalidImageError | None = None


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    chunks: list[bytes] | None = None  # None: a part that is not kept
    size: int = 0


class _Collector:
    """python-multipart callbacks that keep the image parts, up to ``max_images``, and no
    more than ``limit`` bytes of each."""

    def __init__(self, max_images: int, limit: BodyLimit | None) -> None:
        self.max_images = max_images
        self.limit = limit
        self.images: list[ImagePart] = []
        self.form_fields = 0  # parts named image that are not files
        self._part = _Part()
        self._name = b""
        self._value = b""

    def on_part_begin(self) -> None:
        self._part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._part.headers[self._name.strip().lower()] = self._value.strip()
        self._name = self._value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._part.headers.get(b"content-disposition"))
        if options.get(b"name") != FIELD.encode():
            return
        media_type, _ = parse_options_header(self._part.headers.get(b"content-type"))
        if b"filename" not in options and media_type in (b"", b"text/plain"):
            self.form_fields += 1
            return
        if len(self.images) == self.max_images:
            plural = "s" if self.max_images > 1 else ""
            raise InvalidRequestError(
                f"at most {self.max_images} image{plural} per request", field=FIELD
            )
        self._part.chunks = []

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        if part.chunks is not None:
            part.size += end - start
            if self.limit is not None and part.size > self.limit.max_bytes:
                part.chunks.clear()  # counted to its end, kept no further
            else:
                part.chunks.append(data[start:end])

    def on_part_end(self) -> None:
        part = self._part
        if part.chunks is not None:
            _, options = parse_options_header(part.headers.get(b"content-disposition"))
            raw_name = options.get(b"filename")
            filename = raw_name.decode("utf-8", "replace") if raw_name is not None else None
            if self.limit is not None and part.size > self.limit.max_bytes:
                message = replace(self.limit, what="the image").message()
                error = InvalidImageError(message, too_large=True)
                self.images.append(ImagePart(filename, b"", error))
            else:
                data = b"".join(part.chunks)
                if not data:  # the document's minLength: an empty file is never an image
                    raise InvalidRequestError(
                        f"image file {len(self.images) + 1} ({filename!r}) is empty: 0 bytes",
                        field=FIELD,
                    )
                self.images.append(ImagePart(filename, data))
            part.chunks = None


async def read_images(
    request: Request, max_images: int, limit: BodyLimit | None = None
) -> list[ImagePart]:
    """The request's ``image`` parts, in order; those over ``limit`` with their ``error``.

    Raises:
        InvalidRequestError: Not a multipart body, a malformed one, no image file (MAX's
            400 for a missing image), an ``image`` part that is a form field beside image
            files, an empty file, or more than ``max_images`` files.
    """
    media_type, options = parse_options_header(request.headers.get("content-type"))
    boundary = options.get(b"boundary")
    if media_type != b"multipart/form-data" or not boundary:
        raise InvalidRequestError(MAX_MISSING_IMAGE, field=FIELD)
    collector = _Collector(max_images, limit)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": collector.on_part_begin,
            "on_header_field": collector.on_header_field,
            "on_header_value": collector.on_header_value,
            "on_header_end": collector.on_header_end,
            "on_headers_finished": collector.on_headers_finished,
            "on_part_data": collector.on_part_data,
            "on_part_end": collector.on_part_end,
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise InvalidRequestError(f"the multipart body is malformed: {exc}", field=FIELD) from exc
    if not collector.images:
        raise InvalidRequestError(MAX_MISSING_IMAGE, field=FIELD)
    if collector.form_fields:
        raise InvalidRequestError(
            f"every part named {FIELD} must be a file (a filename or a non-text Content-Type); "
            f"{collector.form_fields} of them were plain form fields",
            field=FIELD,
        )
    return collector.images
