"""Image bytes -> float32 ``[299, 299, 3]`` in [-1, 1], exactly as im2txt prepared images.

The order is the original's (docs/faithfulness.md, "Preprocessing"): decode to uint8 RGB,
scale by the float32 constant 1/255, TF1 bilinear resize to 346x346
(``half_pixel_centers=False``: the weights were trained with that sampling, and TF2's
default moves the log-probabilities), central crop 299x299, then ``(x - 0.5) * 2``.

Beyond the original: the format is judged by the bytes (never a name or declared type);
GIF (first frame), BMP, WebP and TIFF are accepted; EXIF orientation is applied (phones
write it, and the original captioned their photos sideways); an absurd pixel count is
refused from the header, before any pixel is decoded.
"""

from __future__ import annotations

import io
import re
import warnings
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
                f"the {fmt} image is {width}x{height} = {width * height} pixels, "
                f"more than the limit of {max_pixels}",
                too_large=True,
            )
        orientation = _exif_orientation(header)
        pixels = _decode_with_tf(data, fmt) if fmt in _TF_FORMATS else _decode_with_pillow(header)
    if pixels.shape[0] != height or pixels.shape[1] != width:
        raise InvalidImageError(f"the {fmt} image decodes to another size than its header says")
    return _apply_orientation(pixels, orientation)


def preprocess_image(data: bytes, *, max_pixels: int) -> np.ndarray:
    """Image bytes -> float32 ``[299, 299, 3]`` in [-1, 1], im2txt's exact preprocessing.

    Raises:
        InvalidImageError: as :func:`decode_image`.
    """
    return _scale_resize_crop()(decode_image(data, max_pixels=max_pixels)).numpy()


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


@cache
def _scale_resize_crop() -> Any:
    """The TensorFlow half of preprocessing, traced once for any image size."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
    def scale_resize_crop(image: tf.Tensor) -> tf.Tensor:
        # convert_image_dtype's uint8 -> float32: multiply by the float32 constant 1/255.
        x = tf.cast(image, tf.float32) * tf.constant(1.0 / 255.0, tf.float32)
        x = resize_bilinear_tf1(x[tf.newaxis], (RESIZE_SIZE, RESIZE_SIZE))[0]
        x = x[CROP_OFFSET : CROP_OFFSET + IMAGE_SIZE, CROP_OFFSET : CROP_OFFSET + IMAGE_SIZE]
        return (x - 0.5) * 2.0

    return scale_resize_crop


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
        return image.numpy()
    except (tf.errors.OpError, ValueError) as exc:
        detail = _tf_error_detail(exc)
        raise InvalidImageError(
            f"the {fmt} image is corrupt or truncated and cannot be decoded ({detail})"
        ) from exc


def _tf_error_detail(exc: Exception) -> str:
    """The decoder's own words from a TF error, without TF's op and function decorations."""
    text = getattr(exc, "message", None) or str(exc)
    text = re.sub(r"\{\{[^}]*\}\}\s*", "", text)
    text = re.sub(r"\s*\[Op:\w+\]", "", text).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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
