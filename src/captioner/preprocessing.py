"""Image bytes -> float32 ``[299, 299, 3]`` in [-1, 1], exactly as im2txt prepared images.

The order is the original's (docs/faithfulness.md, "Preprocessing"): decode to uint8 RGB,
scale by the float32 constant 1/255, TF1 bilinear resize to 346x346
(``half_pixel_centers=False``: the weights were trained with that sampling, and TF2's
default moves the log-probabilities), central crop 299x299, then ``(x - 0.5) * 2``.

Beyond the original: the format is judged by the bytes (never a name or declared type);
GIF (first frame), BMP, WebP and TIFF are accepted; EXIF orientation is applied (phones
write it, and the original captioned their photos sideways); an absurd pixel count is
refused from the header, before any pixel is decoded.

Memory: a decoded image is 3 bytes a pixel, and the original's float32 copy of it 12 more
(120 MB for a 10-megapixel photo). Here the resize runs in two passes that give the very
same float32 values (see :func:`_scale_resize_crop`), the first over strips of rows, so
that copy never exists; and a :class:`PixelBudget` can bound the pixels being decoded at
once across threads.
"""

from __future__ import annotations

import contextlib
import io
import threading
import warnings
from collections.abc import Iterator
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from captioner.errors import InvalidImageError

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = [
    "CROP_OFFSET",
    "IMAGE_SIZE",
    "RESIZE_SIZE",
    "PixelBudget",
    "decode_image",
    "detect_format",
    "preprocess_image",
    "resize_bilinear_tf1",
]

RESIZE_SIZE = 346
IMAGE_SIZE = 299
CROP_OFFSET = (RESIZE_SIZE - IMAGE_SIZE) // 2  # rows and columns 23..321

# Formats whose pixels TensorFlow decodes, as the original did (TF's JPEG decoder uses
# libjpeg's fast integer IDCT; Pillow's accurate IDCT differs by up to 6 levels).
_TF_FORMATS = {"JPEG", "PNG", "GIF", "BMP"}

_EXIF_ORIENTATION = 0x0112

# Float32 values per strip of the first resize pass (8 MB): small next to the image.
_STRIP_VALUES = 2 * 1024 * 1024


class PixelBudget:
    """At most ``capacity`` pixels of full-size images decoded at once, across threads.

    An image waits (in its decoding thread) until its pixels fit; one larger than the
    whole budget waits for the budget to empty and then takes all of it, so nothing
    waits forever.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a pixel budget needs a capacity of at least 1")
        self.capacity = capacity
        self._used = 0
        self._room = threading.Condition()

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        """Hold ``pixels`` of the budget for the duration of the block."""
        pixels = min(pixels, self.capacity)
        with self._room:
            self._room.wait_for(lambda: self._used + pixels <= self.capacity)
            self._used += pixels
        try:
            yield
        finally:
            with self._room:
                self._used -= pixels
                self._room.notify_all()


def detect_format(data: bytes) -> str | None:
    """The image format named by the leading bytes ("JPEG", "PNG", ...), or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:2] == b"BM":
        return "BMP"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    return None


def decode_image(data: bytes, *, max_pixels: int) -> np.ndarray:
    """Decode image bytes to uint8 RGB ``[H, W, 3]``, upright by its EXIF orientation.

    Alpha is dropped without compositing and grayscale repeated to 3 channels, as the
    original did.

    Args:
        data: the raw bytes of a JPEG, PNG, GIF, BMP, WebP or TIFF file.
        max_pixels: refuse images whose header declares more pixels than this.

    Raises:
        InvalidImageError: empty, unknown format, corrupt or truncated data, or too many
            pixels (``too_large`` set).
    """
    if not data:
        raise InvalidImageError("the image is empty (0 bytes)")
    fmt = detect_format(data)
    if fmt is None:
        raise InvalidImageError(
            "the data is not a supported image (JPEG, PNG, GIF, BMP, WebP or TIFF)"
        )
    with _open_header(data, fmt) as header:
        width, height = header.size
        if width * height > max_pixels:
            raise InvalidImageError(
                f"the {fmt} image is {width}x{height} = {width * height:,} pixels, "
                f"more than the limit of {max_pixels:,}",
                too_large=True,
            )
        orientation = _exif_orientation(header)
        pixels = _decode_with_tf(data, fmt) if fmt in _TF_FORMATS else _decode_with_pillow(header)
    if pixels.shape[0] != height or pixels.shape[1] != width:
        raise InvalidImageError(f"the {fmt} image decodes to another size than its header says")
    return _apply_orientation(pixels, orientation)


def preprocess_image(
    data: bytes, *, max_pixels: int, budget: PixelBudget | None = None
) -> np.ndarray:
    """Image bytes -> float32 ``[299, 299, 3]`` in [-1, 1], im2txt's exact preprocessing.

    Args:
        data: the raw bytes of an image.
        max_pixels: refuse images whose header declares more pixels than this.
        budget: if given, decoding waits until the image's pixels fit in it.

    Raises:
        InvalidImageError: as :func:`decode_image`.
    """
    pixels = _declared_pixels(data)
    held = budget.hold(pixels) if budget and pixels <= max_pixels else contextlib.nullcontext()
    with held:
        return _scale_resize_crop(decode_image(data, max_pixels=max_pixels))


def resize_bilinear_tf1(images: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """TF1's bilinear resize: corner-aligned sampling, no half-pixel centres, no antialias.

    Args:
        images: float32 ``[B, H, W, C]``.
        size: output ``(height, width)``.
    """
    import tensorflow as tf

    return tf.raw_ops.ResizeBilinear(
        images=images, size=size, align_corners=False, half_pixel_centers=False
    )


def _scale_resize_crop(image: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> float32 ``[299, 299, 3]``: scale to [0, 1], TF1 bilinear
    resize to 346x346, central crop, then ``(x - 0.5) * 2``, as the original computed it.

    TF1's bilinear resize computes each output value as ``top + (bottom - top) * dy``, with
    ``top`` and ``bottom`` interpolated along the row (``left + (right - left) * dx``).
    Resizing only the width (the height kept, so ``dy`` is exactly 0) yields exactly
    ``top`` for every row; resizing only the height of that (``dx`` exactly 0) then
    computes the same final expression on the same values. So two passes give the very
    float32 values of one, and the first pass can run over strips of rows: the image is
    never all float32 at once. When the image is no wider than 346 pixels the full float32
    copy is no bigger than the first pass's output, and one pass is used.
    """
    height, width = image.shape[:2]
    scale_width, scale_height, whole = _resize_graphs()
    if width <= RESIZE_SIZE:
        return whole(image).numpy()  # type: ignore[no-any-return]
    rows = max(1, _STRIP_VALUES // (width * 3))
    strips = [scale_width(image[top : top + rows]) for top in range(0, height, rows)]
    import tensorflow as tf

    return scale_height(tf.concat(strips, axis=0)).numpy()  # type: ignore[no-any-return]


@cache
def _resize_graphs() -> tuple[Any, Any, Any]:
    """The TensorFlow half of preprocessing, traced once for any image size: the width
    pass (on uint8 rows), the height pass with crop and shift, and the two at once."""
    import tensorflow as tf

    def to_unit(image: tf.Tensor) -> tf.Tensor:
        # convert_image_dtype's uint8 -> float32: multiply by the float32 constant 1/255.
        return tf.cast(image, tf.float32) * tf.constant(1.0 / 255.0, tf.float32)

    def crop_and_shift(x: tf.Tensor) -> tf.Tensor:
        x = x[CROP_OFFSET : CROP_OFFSET + IMAGE_SIZE, CROP_OFFSET : CROP_OFFSET + IMAGE_SIZE]
        return (x - 0.5) * 2.0

    def scale_width(rows: tf.Tensor) -> tf.Tensor:
        height = tf.shape(rows)[0]
        return resize_bilinear_tf1(to_unit(rows)[tf.newaxis], (height, RESIZE_SIZE))[0]

    def scale_height(x: tf.Tensor) -> tf.Tensor:
        x = resize_bilinear_tf1(x[tf.newaxis], (RESIZE_SIZE, RESIZE_SIZE))[0]
        return crop_and_shift(x)

    def whole(image: tf.Tensor) -> tf.Tensor:
        x = resize_bilinear_tf1(to_unit(image)[tf.newaxis], (RESIZE_SIZE, RESIZE_SIZE))[0]
        return crop_and_shift(x)

    uint8_image = [tf.TensorSpec([None, None, 3], tf.uint8)]
    return (
        tf.function(scale_width, input_signature=uint8_image),
        tf.function(
            scale_height, input_signature=[tf.TensorSpec([None, RESIZE_SIZE, 3], tf.float32)]
        ),
        tf.function(whole, input_signature=uint8_image),
    )


def _declared_pixels(data: bytes) -> int:
    """The pixel count the header declares; 0 if unreadable (decoding then says why)."""
    fmt = detect_format(data)
    if fmt is None:
        return 0
    try:
        with _open_header(data, fmt) as header:
            width, height = header.size
    except InvalidImageError:
        return 0
    return int(width * height)


class _open_header:
    """Open the bytes with Pillow for metadata only (size, EXIF); pixels stay undecoded."""

    def __init__(self, data: bytes, fmt: str) -> None:
        self._data = data
        self._fmt = fmt
        self._image: Image.Image | None = None

    def __enter__(self) -> Image.Image:
        try:
            with warnings.catch_warnings():
                # Our own pixel limit runs right after (Pillow's bomb warning must not pre-empt
                # it), and a truncated header is reported by the exception below.
                warnings.simplefilter("ignore")
                self._image = Image.open(io.BytesIO(self._data))
                self._image.size  # noqa: B018 - header parsed by open()
        except Image.DecompressionBombError as exc:
            raise InvalidImageError(
                f"the {self._fmt} image declares far too many pixels to be decoded safely",
                too_large=True,
            ) from exc
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise InvalidImageError(
                f"the {self._fmt} image is corrupt or truncated: its header cannot be read"
            ) from exc
        return self._image

    def __exit__(self, *exc_info: object) -> None:
        if self._image is not None:
            self._image.close()


def _exif_orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # malformed EXIF must not cost the caption
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Turn ``[H, W, 3]`` pixels upright by EXIF orientation 1..8 (exact: no resampling)."""
    if orientation == 2:
        pixels = pixels[:, ::-1]
    elif orientation == 3:
        pixels = pixels[::-1, ::-1]
    elif orientation == 4:
        pixels = pixels[::-1]
    elif orientation == 5:
        pixels = pixels.transpose(1, 0, 2)
    elif orientation == 6:
        pixels = np.rot90(pixels, k=-1)
    elif orientation == 7:
        pixels = pixels.transpose(1, 0, 2)[::-1, ::-1]
    elif orientation == 8:
        pixels = np.rot90(pixels, k=1)
    return np.ascontiguousarray(pixels)


def _decode_with_tf(data: bytes, fmt: str) -> np.ndarray:
    import tensorflow as tf

    try:
        if fmt == "JPEG":
            # The original's decoder and its default IDCT, for bit-identical pixels.
            image = tf.io.decode_jpeg(data, channels=3)
        else:
            image = tf.io.decode_image(data, channels=3, expand_animations=False)
        pixels: np.ndarray = image.numpy()
        return pixels
    except (tf.errors.OpError, ValueError) as exc:
        # TensorFlow's own words name its internals (``jpeg::Uncompress failed``), not the
        # client's problem; they stay on the exception's cause for a debugger.
        raise InvalidImageError(
            f"the {fmt} image is corrupt or truncated and cannot be decoded"
        ) from exc


def _decode_with_pillow(image: Image.Image) -> np.ndarray:
    """Decode the first frame to RGB; alpha is dropped by conversion, not composited."""
    try:
        image.seek(0)
        if image.mode.startswith("I;16"):
            # 16-bit grayscale: keep the high byte (RGB conversion would clip at 255).
            gray = (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)
            return np.repeat(gray[:, :, np.newaxis], 3, axis=2)
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidImageError(
            f"the {image.format or 'image'} is corrupt or truncated and cannot be decoded ({exc})"
        ) from exc
