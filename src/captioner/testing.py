"""Stand-ins for the pretrained weights (im2txt checkpoints with seeded random values), and
a hostile image, for the tests and the benchmarks.

The real weights are a 277 MB download that is not always possible (CI, offline machines),
so the tests and the benchmarks write the exact tensor layout themselves: full size (the
383 tensors of the original, same shapes, hence the same speed and memory) or smaller (a
width multiplier and a small embedding, LSTM and vocabulary). Random weights give nonsense
captions whose beam search never ends early (the worst case for speed); they check
structure and agreement between code paths, never meaning (docs/faithfulness.md).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from captioner.assets import ModelFiles
from captioner.checkpoint import LSTM_NAMINGS, im2txt_tensor_shapes, save_checkpoint

__all__ = [
    "png_declaring",
    "random_tensors",
    "write_full_size_checkpoint",
    "write_random_checkpoint",
    "write_vocabulary",
]


def random_tensors(
    *,
    depth_multiplier: float,
    vocab_rows: int,
    embedding_size: int,
    lstm_units: int,
    seed: int,
    lstm_naming: int = 0,
    end_bias: float = 1.5,
) -> dict[str, np.ndarray]:
    """Seeded random values for every tensor, scaled so activations neither die nor explode."""
    rng = np.random.default_rng(seed)
    shapes = im2txt_tensor_shapes(
        depth_multiplier=depth_multiplier,
        vocab_rows=vocab_rows,
        embedding_size=embedding_size,
        lstm_units=lstm_units,
    )
    renames = dict(zip(LSTM_NAMINGS[0], LSTM_NAMINGS[lstm_naming], strict=True))
    tensors: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        value: np.ndarray
        if name == "global_step":
            value = np.array(1234, dtype=np.int32)
        elif name.endswith("/weights") and name.startswith("InceptionV3/"):
            fan_in = shape[0] * shape[1] * shape[2]
            value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        elif name.endswith("/beta") or name.endswith("/moving_mean"):
            value = rng.normal(0.0, 0.1, shape)
        elif name.endswith("/moving_variance"):
            value = rng.uniform(0.5, 1.5, shape)
        elif name == "logits/weights":
            value = rng.normal(0.0, 3.0 / np.sqrt(shape[0]), shape)
        elif name == "image_embedding/weights":
            # Large enough that different images start the LSTM in clearly different states.
            value = rng.normal(0.0, 4.0 / np.sqrt(shape[0]), shape)
        elif name == "seq_embedding/map":
            value = rng.normal(0.0, 1.0, shape)
        elif name in ("logits/biases", LSTM_NAMINGS[0][1]):
            value = rng.normal(0.0, 0.5, shape)
        else:
            value = rng.normal(0.0, 1.0 / np.sqrt(shape[0]), shape)
        if name == "logits/biases":
            # Favour the end word (id 2) so that beams complete at varied lengths.
            value[2] += end_bias
        tensors[renames.get(name, name)] = np.asarray(
            value, dtype=value.dtype if name == "global_step" else np.float32
        )
    return tensors


def write_vocabulary(path: Path, words_in_file: int) -> Path:
    """Write a ``word_counts.txt`` of ``words_in_file`` lines: ``a``, ``<S>``, ``</S>``, ``w3``...

    The same shape as the original file: start word on line 1, end word on line 2, counts
    descending.
    """
    words = ["a", "<S>", "</S>"] + [f"w{i}" for i in range(3, words_in_file)]
    path.write_text("".join(f"{w} {1_000_000 - i}\n" for i, w in enumerate(words)))
    return path


def write_random_checkpoint(
    directory: Path,
    *,
    depth_multiplier: float = 0.1,
    vocab_rows: int = 60,
    words_in_file: int | None = None,
    embedding_size: int = 32,
    lstm_units: int = 24,
    seed: int = 0,
    lstm_naming: int = 0,
    end_bias: float = 1.5,
    prefix_name: str = "model.ckpt-1234",
) -> ModelFiles:
    """Write ``directory/checkpoint/<prefix_name>.*`` and ``directory/word_counts.txt``.

    The vocabulary file is shorter than the model's rows by default (as the original:
    11,519 words for 12,000 rows), so ids past the file read as ``<UNK>``.
    """
    if words_in_file is None:
        words_in_file = max(4, vocab_rows - 1 - vocab_rows // 10)
    tensors = random_tensors(
        depth_multiplier=depth_multiplier,
        vocab_rows=vocab_rows,
        embedding_size=embedding_size,
        lstm_units=lstm_units,
        seed=seed,
        lstm_naming=lstm_naming,
        end_bias=end_bias,
    )
    save_checkpoint(directory / "checkpoint" / prefix_name, tensors)
    vocab = write_vocabulary(directory / "word_counts.txt", words_in_file)
    return ModelFiles(checkpoint=directory / "checkpoint", vocab=vocab)


def write_full_size_checkpoint(directory: Path, seed: int = 0) -> ModelFiles:
    """The original layout and shapes (383 tensors), random values, 11,519-word vocabulary."""
    return write_random_checkpoint(
        directory,
        depth_multiplier=1.0,
        vocab_rows=12000,
        words_in_file=11519,
        embedding_size=512,
        lstm_units=512,
        seed=seed,
        prefix_name="model2.ckpt-2000000",
    )


def png_declaring(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes whose header declares ``width`` x ``height`` pixels: a
    decompression bomb, which a server must refuse from its header, before decoding."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    pixels = zlib.compress(b"\x00" * 64)
    signature = b"\x89PNG\r\n\x1a\n"
    return signature + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
