"""Preprocessing: TF1 sampling, crop and scale, formats judged by bytes, EXIF, bad input."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from captioner.errors import InvalidImageError
from captioner.preprocessing import (
    PixelBudget,
    decode_image,
    detect_format,
    preprocess_image,
)
from captioner.testing import png_declaring
from support.reference import resize_bilinear_tf1 as numpy_resize_tf1

LIMIT = 10_000_000


def resize_bilinear_tf1(images: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """The original's resize, TensorFlow's own op: TF1 sampling (no half-pixel centres)."""
    return tf.raw_ops.ResizeBilinear(
        images=images, size=size, align_corners=False, half_pixel_centers=False
    )


def _encode(pixels: np.ndarray, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **params)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """An asymmetric test picture: a gradient with a marked top-left corner."""
    rows, cols = np.mgrid[0:60, 0:90]
    pixels = np.stack([rows * 4, cols * 2, (rows + cols) % 256], axis=2).astype(np.uint8)
    pixels[:10, :15] = (255, 0, 0)
    return pixels


def test_tf1_sampling_hand_computed() -> None:
    # 2x2 -> 4x4, TF1 legacy: source coordinate = out * (in / out) = out * 0.5, no half
    # pixel offset; the right/bottom neighbours clamp at the edge.
    image = tf.constant([[[[0.0], [10.0]], [[20.0], [30.0]]]])
    out = resize_bilinear_tf1(image, (4, 4)).numpy()[0, :, :, 0]
    expected = np.array(
        [
            [0.0, 5.0, 10.0, 10.0],
            [10.0, 15.0, 20.0, 20.0],
            [20.0, 25.0, 30.0, 30.0],
            [20.0, 25.0, 30.0, 30.0],
        ]
    )
    np.testing.assert_array_equal(out, expected)
    # TF2's default (half-pixel centres) gives other values: the trap docs/faithfulness.md names.
    tf2 = tf.image.resize(image, (4, 4), method="bilinear").numpy()[0, :, :, 0]
    assert not np.allclose(tf2, expected)


def test_tf1_sampling_matches_independent_numpy(photo: np.ndarray) -> None:
    image = photo.astype(np.float32) / 255.0
    got = resize_bilinear_tf1(tf.constant(image[np.newaxis]), (346, 346)).numpy()[0]
    np.testing.assert_allclose(got, numpy_resize_tf1(image, 346, 346), atol=1e-6)


def test_full_pipeline_matches_the_spec_steps(photo: np.ndarray) -> None:
    got = preprocess_image(_encode(photo, "PNG"), max_pixels=LIMIT)
    scaled = photo.astype(np.float32) * np.float32(1.0 / 255.0)
    resized = numpy_resize_tf1(scaled, 346, 346)
    expected = (resized[23:322, 23:322] - 0.5) * 2.0
    assert got.shape == (299, 299, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert got.min() >= -1.0 and got.max() <= 1.0


def test_jpeg_pixels_come_from_tensorflows_decoder(photo: np.ndarray) -> None:
    data = _encode(photo, "JPEG", quality=90)
    np.testing.assert_array_equal(
        decode_image(data, max_pixels=LIMIT), tf.io.decode_jpeg(data, channels=3).numpy()
    )


@pytest.mark.parametrize(
    ("fmt", "magic"),
    [
        ("JPEG", "JPEG"),
        ("PNG", "PNG"),
        ("GIF", "GIF"),
        ("BMP", "BMP"),
        ("WEBP", "WEBP"),
        ("TIFF", "TIFF"),
    ],
)
def test_every_accepted_format(photo: np.ndarray, fmt: str, magic: str) -> None:
    params = {"lossless": True} if fmt == "WEBP" else {}
    data = _encode(photo, fmt, **params)
    assert detect_format(data) == magic
    decoded = decode_image(data, max_pixels=LIMIT)
    assert decoded.shape == photo.shape and decoded.dtype == np.uint8
    if fmt in ("PNG", "BMP", "TIFF", "WEBP"):  # lossless: exact pixels
        np.testing.assert_array_equal(decoded, photo)
    else:  # lossy or palette: close to the original
        assert np.abs(decoded.astype(int) - photo).mean() < 12
    assert preprocess_image(data, max_pixels=LIMIT).shape == (299, 299, 3)


def test_gif_uses_the_first_frame(photo: np.ndarray) -> None:
    frames = [Image.fromarray(np.full((20, 30, 3), c, np.uint8)) for c in (0, 255)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    assert decode_image(buffer.getvalue(), max_pixels=LIMIT).max() == 0


def test_format_is_judged_by_bytes_not_by_name(photo: np.ndarray) -> None:
    png = _encode(photo, "PNG")
    assert detect_format(png) == "PNG"
    # Bytes that only start like a GIF are a corrupt GIF, whatever they were called.
    with pytest.raises(InvalidImageError, match="GIF image is corrupt"):
        decode_image(b"GIF89a\x02\x00\x02\x00 and then nothing of a GIF", max_pixels=LIMIT)


def test_grayscale_and_rgba(photo: np.ndarray) -> None:
    gray = photo[:, :, 0]
    decoded = decode_image(_encode(gray, "PNG"), max_pixels=LIMIT)
    assert decoded.shape == (*gray.shape, 3)
    for channel in range(3):
        np.testing.assert_array_equal(decoded[:, :, channel], gray)
    rgba = np.dstack([photo, np.full(photo.shape[:2], 7, np.uint8)])
    # Alpha dropped without compositing: the colour channels stay as stored.
    np.testing.assert_array_equal(decode_image(_encode(rgba, "PNG"), max_pixels=LIMIT), photo)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(photo: np.ndarray, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    image = Image.fromarray(photo)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", exif=exif.tobytes())
    from PIL import ImageOps

    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buffer.getvalue()))))
    np.testing.assert_array_equal(decode_image(buffer.getvalue(), max_pixels=LIMIT), upright)


def test_exif_orientation_on_a_jpeg(photo: np.ndarray) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, "JPEG", exif=exif.tobytes(), quality=95)
    decoded = decode_image(buffer.getvalue(), max_pixels=LIMIT)
    assert decoded.shape == (90, 60, 3)
    # The red top-left block is now in the top-right corner.
    assert decoded[2, -3, 0] > 200 and decoded[2, -3, 1] < 60


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty"),
        (b"this is not an image at all", "not a supported image"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 40, "corrupt"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, "corrupt"),
    ],
)
def test_bad_bytes_give_a_clear_error(data: bytes, match: str) -> None:
    with pytest.raises(InvalidImageError, match=match) as info:
        preprocess_image(data, max_pixels=LIMIT)
    assert not info.value.too_large


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_images_give_a_clear_error(photo: np.ndarray, fmt: str) -> None:
    noisy = np.random.default_rng(1).integers(0, 256, (240, 360, 3), dtype=np.uint8)
    data = _encode(noisy, fmt)
    with pytest.raises(InvalidImageError, match=r"corrupt|truncated"):
        preprocess_image(data[: len(data) // 2], max_pixels=LIMIT)


def test_a_truncated_jpeg_is_named_without_the_decoders_internal_words(
    photo: np.ndarray,
) -> None:
    noisy = np.random.default_rng(1).integers(0, 256, (240, 360, 3), dtype=np.uint8)
    data = _encode(noisy, "JPEG")
    with pytest.raises(InvalidImageError) as info:
        preprocess_image(data[: len(data) // 2], max_pixels=LIMIT)
    assert str(info.value) == "the JPEG image is corrupt or truncated and cannot be decoded"


def test_pixel_count_over_the_limit_is_refused_from_the_header() -> None:
    big = _encode(np.zeros((2000, 3000, 3), np.uint8), "PNG")
    with pytest.raises(
        InvalidImageError, match="3000x2000 = 6,000,000 pixels, more than the limit of 1,000,000"
    ) as info:
        decode_image(big, max_pixels=1_000_000)
    assert info.value.too_large
    assert decode_image(big, max_pixels=6_000_000).shape == (2000, 3000, 3)


def test_decompression_bomb_header_is_refused_without_decoding() -> None:
    with pytest.raises(InvalidImageError, match="too many pixels to be decoded") as info:
        decode_image(png_declaring(100_000, 100_000), max_pixels=LIMIT)
    assert info.value.too_large


# --- the crop-only resize and the pixel budget ---------------------------------------------


def _one_pass_reference(image: np.ndarray) -> np.ndarray:
    """The original's graph: the whole image in float32, TensorFlow's resize, the crop."""
    x = tf.cast(tf.constant(image), tf.float32) * tf.constant(1.0 / 255.0, tf.float32)
    x = resize_bilinear_tf1(x[tf.newaxis], (346, 346))[0][23:322, 23:322]
    return ((x - 0.5) * 2.0).numpy()


@pytest.mark.parametrize(
    "shape",
    [
        (1, 1),
        (2, 3),
        (299, 299),
        (346, 346),
        (346, 347),
        (347, 346),
        (480, 640),
        (1001, 700),
        (2600, 3900),
        (1500, 9000),
        (9, 1400),
        (3000, 17),
    ],
)
def test_crop_only_resize_gives_the_original_values_bit_for_bit(shape: tuple[int, int]) -> None:
    image = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    got = preprocess_image(_encode(image, "PNG"), max_pixels=LIMIT * 10)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, _one_pass_reference(image))


def test_pixel_budget_bounds_what_threads_hold_at_once() -> None:
    budget = PixelBudget(10)
    lock = threading.Lock()
    held = [0]
    peak = [0]

    def work(pixels: int) -> None:
        with budget.hold(pixels):
            with lock:
                held[0] += pixels
                peak[0] = max(peak[0], held[0])
            time.sleep(0.01)
            with lock:
                held[0] -= pixels

    threads = [threading.Thread(target=work, args=(p,)) for p in (4, 4, 4, 6, 3, 25, 1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)  # 25 > 10 still ran, alone
    assert peak[0] <= 25 and held[0] == 0
    with budget.hold(10):  # everything was given back
        pass


def test_a_full_budget_delays_decoding_but_not_a_refusal() -> None:
    budget = PixelBudget(1000)
    small = _encode(np.zeros((20, 30, 3), np.uint8), "PNG")  # 600 pixels
    too_big = _encode(np.zeros((40, 50, 3), np.uint8), "PNG")  # 2000 > max_pixels
    done = threading.Event()
    with budget.hold(1000):
        with pytest.raises(InvalidImageError, match="more than the limit"):
            preprocess_image(too_big, max_pixels=1500, budget=budget)  # no wait for room
        waiting = threading.Thread(
            target=lambda: (preprocess_image(small, max_pixels=1500, budget=budget), done.set())
        )
        waiting.start()
        assert not done.wait(0.2)  # no room while the budget is full
    assert done.wait(10)
    waiting.join()
