"""A fake Captioner with the engine's interface: no model, answers in microseconds.

It returns the engine's own ``Caption`` and ``ModelInfo`` (plain dataclasses; importing
``captioner.engine`` does not load TensorFlow), and decodes uploads with the server's own
decoder (``captioner.preprocessing.decode_image``, which loads TensorFlow's image decoders
when first used).

Its captions name each image's dominant colour ("a red square"), so a test can tell whose
captions a client received. It records every engine call (batch size, knobs, thread) and
can be held at a gate to freeze the worker mid-batch or the warm-up mid-load.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from captioner.engine import Caption, ModelInfo
from captioner.errors import InvalidRequestError
from captioner.preprocessing import decode_image

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "cyan": (0, 255, 255),
    "magenta": (255, 0, 255),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
}
NOUNS = ("square", "picture", "thing", "patch", "field", "card", "tile", "panel", "block", "sheet")


def fake_info(**overrides: object) -> ModelInfo:
    """The engine's own ModelInfo, describing a small made-up checkpoint."""
    values: dict[str, object] = {
        "name": "fake",
        "checkpoint": "/models/fake/checkpoint",
        "is_pretrained_im2txt": False,
        "vocab_size": 60,
        "vocab_rows": 60,
        "embedding_size": 32,
        "lstm_units": 24,
        "image_feature_size": 204,
        "global_step": 1234,
    }
    return ModelInfo(**{**values, **overrides})  # type: ignore[arg-type]


@dataclass
class FakeEngine:
    """Dominant-colour captions; see the module docstring."""

    info: ModelInfo = field(default_factory=fake_info)
    max_image_pixels: int = 4_000_000
    gate: threading.Event | None = None  # when set, caption_arrays waits for it
    warmup_gate: threading.Event | None = None  # when set, warmup waits for it
    decode_gates: dict[str, threading.Event] = field(default_factory=dict)  # colour -> gate
    fail_with: Exception | None = None  # caption_arrays raises it
    calls: list[tuple[int, int, int]] = field(default_factory=list)  # (batch, beam, length)
    threads: set[str] = field(default_factory=set)
    preprocessed: int = 0
    warmed_up: list[int] = field(default_factory=list)
    entered: threading.Event = field(default_factory=threading.Event)

    @property
    def batch_sizes(self) -> list[int]:
        return [call[0] for call in self.calls]

    def preprocess(self, image: bytes) -> np.ndarray:
        # The server's own decoder, so that what a bad upload is told (empty, unknown
        # format, corrupt, too many pixels) is what the server says; only the resize is
        # cheaper than the engine's.
        decoded = decode_image(image, max_pixels=self.max_image_pixels)
        rgb = Image.fromarray(decoded).resize((299, 299))
        pixels = (np.asarray(rgb, dtype=np.float32) / 255.0 - 0.5) * 2.0
        gate = self.decode_gates.get(colour_of(pixels))
        if gate is not None:  # a slow upload: its decoding ends when the test says so
            gate.wait(10)
        self.preprocessed += 1
        return pixels

    def caption_arrays(
        self, pixels: np.ndarray, beam_size: int = 3, max_length: int = 20
    ) -> list[list[Caption]]:
        self.threads.add(threading.current_thread().name)
        self.calls.append((len(pixels), beam_size, max_length))
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail_with is not None:
            raise self.fail_with
        assert pixels.dtype == np.float32 and pixels.shape[1:] == (299, 299, 3)
        return [self._captions(image, beam_size, max_length) for image in pixels]

    def check_parameters(self, beam_size: int, max_length: int) -> None:
        for name, value in (("beam_size", beam_size), ("max_length", max_length)):
            if value < 1:
                raise InvalidRequestError(f"{name} must be at least 1, got {value}", field=name)

    def warmup(self, batch_sizes: Iterable[int], beam_size: int = 3, max_length: int = 20) -> None:
        # Load the decoder (TensorFlow's, seconds) now, as the engine's warm-up does, not
        # during the first request.
        decode_image(png_bytes("black"), max_pixels=self.max_image_pixels)
        if self.warmup_gate is not None:
            self.warmup_gate.wait(10)
        self.warmed_up.extend(batch_sizes)

    @staticmethod
    def _captions(image: np.ndarray, beam_size: int, max_length: int) -> list[Caption]:
        colour = colour_of(image)
        captions = []
        for rank in range(beam_size):
            words = ["a", colour, NOUNS[rank % len(NOUNS)]][:max_length]
            captions.append(Caption(" ".join(words), -1.0 - rank))
        return captions


def colour_of(pixels: np.ndarray) -> str:
    """The palette colour nearest the mean of float32 ``[299, 299, 3]`` pixels in [-1, 1]."""
    mean = (pixels.reshape(-1, 3).mean(axis=0) / 2.0 + 0.5) * 255.0
    return min(PALETTE, key=lambda name: float(np.sum((mean - PALETTE[name]) ** 2)))


def png_bytes(colour: str, size: tuple[int, int] = (64, 48), mode: str = "RGB") -> bytes:
    """A solid image of a palette colour, PNG-encoded."""
    buffer = io.BytesIO()
    Image.new("RGB", size, PALETTE[colour]).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(colour: str, size: tuple[int, int] = (64, 48)) -> bytes:
    """A solid image of a palette colour, JPEG-encoded."""
    buffer = io.BytesIO()
    Image.new("RGB", size, PALETTE[colour]).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()
