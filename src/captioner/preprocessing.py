"""Image bytes -> float32 ``[299, 299, 3]`` in [-1, 1], exactly as im2txt prepared images.

The order is the original's (docs/faithfulness.md, "Preprocessing"): decode to uint8 RGB,
scale by the float32 constant 1/255, TF1 bilinear resize to 346x346
(``half_pixel_centers=False``: the weights were trained with that sampling, and TF2's
default moves the log-probabilities), central crop 299x299, then ``(x - 0.5) * 2``.

Beyond the original: the format is judged by the bytes (never a name or declared type);
GIF (first frame), BMP, WebP and TIFF are accepted; EXIF orientation is applied (phones
write it, and the original captioned their photos sideways); an absurd pixel count is
refused from the header, before any pixel is decoded.

Cost: a decoded image is 3 bytes a pixel, and the original's float32 copy of it 12 more
(120 MB for a 10-megapixel photo), all of it resized though the crop keeps 299x299 of
346x346. Here the same float32 operations run on only the pixels the crop samples (see
:func:`_scale_resize_crop`): the same values, bit for bit, with no float32 copy of the
image and a cost that does not grow with it. A :class:`PixelBudget` can bound the pixels
being decoded at once across threads.
"""

from __future__ import annotations

import contextlib
import io
import threading
import warnings
from collections.abc import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from captioner.errors import InvalidImageError

__all__ = [
    "CROP_OFFSET",
    "IMAGE_SIZE",
    "RESIZE_SIZE",
    "PixelBudget",
    "decode_image",
    "detect_format",
    "preprocess_image",
]

RESIZE_SIZE = 346
IMAGE_SIZE = 299
CROP_OFFSET = (RESIZE_SIZE - IMAGE_SIZE) // 2  # rows and columns 23..321

# Formats whose pixels TensorFlow decodes, as the original did (TF's JPEG decoder uses
# libjpeg's fast integer IDCT; Pillow's accurate IDCT differs by up to 6 levels).
_TF_FORMATS = {"JPEG", "PNG", "GIF", "BMP"}

_EXIF_ORIENTATION = 0x0112

# convert_image_dtype's uint8 -> float32 factor, in float32 as the original's graph held it.
_ONE_255TH = np.float32(1.0 / 255.0)


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


def _scale_resize_crop(image: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> float32 ``[299, 299, 3]``: what the original computed (scale to
    [0, 1], TF1 bilinear resize to 346x346, central crop, ``(x - 0.5) * 2``), bit for bit.

    TF1's bilinear resize (``ResizeBilinear``, no half-pixel centres) samples output row
    ``i`` at ``y = float32(i) * float32(H / 346)``, between input rows ``floor(y)`` and
    ``min(ceil(y), H - 1)``, and computes, in float32, ``top = left + (right - left) * dx``
    on those two rows and then ``top + (bottom - top) * dy``. The same float32 operations
    in the same order give the same values, so only what the crop keeps is computed: the
    (at most 598) input rows and columns its 299x299 outputs sample, gathered from the
    uint8 pixels before the float32 conversion (a per-value multiply by 1/255, so gathering
    first changes nothing). The cost and memory no longer grow with the photo: no float32
    copy of the whole image exists, and the parity tests compare every value with
    TensorFlow's own op.
    """
    height, width = image.shape[:2]
    rows_low, rows_high, row_weight = _sampling(height)
    cols_low, cols_high, col_weight = _sampling(width)
    rows_needed, row_of = np.unique(np.concatenate([rows_low, rows_high]), return_inverse=True)
    rows = image.take(rows_needed, axis=0).reshape(len(rows_needed), width * 3)
    # Along each needed row: left + (right - left) * dx, on the 299 sampled columns.
    along = _to_unit(rows.take(_with_channels(cols_low), axis=1))
    right = _to_unit(rows.take(_with_channels(cols_high), axis=1))
    right -= along
    right *= np.repeat(col_weight, 3)
    along += right
    # Down the columns: top + (bottom - top) * dy.
    top = along.take(row_of[:IMAGE_SIZE], axis=0)
    bottom = along.take(row_of[IMAGE_SIZE:], axis=0)
    bottom -= top
    bottom *= row_weight[:, np.newaxis]
    top += bottom
    top -= np.float32(0.5)
    top *= np.float32(2.0)
    return top.reshape(IMAGE_SIZE, IMAGE_SIZE, 3)


def _sampling(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the cropped outputs along one axis of ``size`` pixels: the lower and upper input
    indices each samples and the weight of the upper, as TF1's resize computes them."""
    scale = np.float32(size) / np.float32(RESIZE_SIZE)
    position = np.arange(CROP_OFFSET, CROP_OFFSET + IMAGE_SIZE, dtype=np.float32) * scale
    low = np.floor(position)
    high = np.minimum(np.ceil(position), size - 1)
    return low.astype(np.intp), high.astype(np.intp), position - low


def _with_channels(columns: np.ndarray) -> np.ndarray:
    """Column indices -> indices into rows of interleaved RGB values."""
    return (columns[:, np.newaxis] * 3 + np.arange(3)).ravel()


def _to_unit(values: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1] as ``convert_image_dtype`` did: times the float32 1/255."""
    unit = values.astype(np.float32)
    unit *= _ONE_255TH
    return unit


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
