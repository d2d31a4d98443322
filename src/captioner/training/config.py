"""The options of a training run: one frozen dataclass, its defaults the CLI's defaults.

Kept free of heavy imports so that ``captioner train --help`` can show the defaults.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from captioner.training.dataset import OnError

__all__ = ["TrainingConfig"]


@dataclass(frozen=True)
class TrainingConfig:
    """Everything that defines a training run (saved as ``training.json``).

    Attributes:
        data: A ``.jsonl`` caption file, or COCO annotations ``.json``.
        images: The COCO image folder (COCO only).
        held_out_fraction: Share of images kept out of training to measure the loss on.
        min_word_count: Words seen fewer times in training captions become ``<UNK>``.
        on_error: ``"skip"`` or ``"fail"`` on bad data.
        embedding_size, lstm_units, depth_multiplier, min_depth: The widths of a new
            model (ignored with ``init_from``).
        init_from: A checkpoint to start from (prefix or directory) instead of a new model.
        init_vocab: The vocabulary of ``init_from``, kept as the model's vocabulary.
        decoder_steps: Phase 1 steps: decoder only, on cached features of a frozen encoder.
        full_steps: Phase 2 steps: the whole model, batch norm in training mode.
        batch_size: Captions per step.
        learning_rate: Peak learning rate of phase 1.
        full_learning_rate: Peak learning rate of phase 2.
        warmup_steps: Linear warm-up at the start of each phase.
        clip_norm: Gradients are clipped to this global norm.
        aux_weight: Weight of the auxiliary word loss in phase 2
            (:class:`~captioner.training.model.AuxiliaryWordPredictor`; 0 = im2txt's loss
            alone). It makes an encoder trained from scratch learn far sooner.
        checkpoint_every: Save and measure the held-out loss every this many steps.
        seed: Seeds the split, the initial values and the batch order.
        image_cache_mb: Keep preprocessed images in memory up to this size.
    """

    data: Path
    images: Path | None = None
    held_out_fraction: float = 0.05
    min_word_count: int = 4
    on_error: OnError = "skip"
    embedding_size: int = 512
    lstm_units: int = 512
    depth_multiplier: float = 1.0
    min_depth: int = 16
    init_from: Path | None = None
    init_vocab: Path | None = None
    decoder_steps: int = 1000
    full_steps: int = 0
    batch_size: int = 32
    learning_rate: float = 2e-3
    full_learning_rate: float = 5e-4
    warmup_steps: int = 100
    clip_norm: float = 5.0
    aux_weight: float = 0.0
    checkpoint_every: int = 500
    seed: int = 0
    image_cache_mb: int = 4096

    def __post_init__(self) -> None:
        checks = {
            "held_out_fraction must be in [0, 1)": 0 <= self.held_out_fraction < 1,
            "min_word_count must be at least 1": self.min_word_count >= 1,
            "steps must not be negative": min(self.decoder_steps, self.full_steps) >= 0,
            "there must be some steps to train": self.decoder_steps + self.full_steps > 0,
            "batch_size must be at least 1": self.batch_size >= 1,
            "learning rates must be positive": min(self.learning_rate, self.full_learning_rate) > 0,
            "warmup_steps must not be negative": self.warmup_steps >= 0,
            "clip_norm must be positive": self.clip_norm > 0,
            "aux_weight must not be negative": self.aux_weight >= 0,
            "image_cache_mb must not be negative": self.image_cache_mb >= 0,
            "checkpoint_every must be at least 1": self.checkpoint_every >= 1,
            "widths must be positive": min(
                self.embedding_size, self.lstm_units, self.depth_multiplier, self.min_depth
            )
            > 0,
            "init_vocab goes with init_from": self.init_vocab is None or bool(self.init_from),
        }
        for message, ok in checks.items():
            if not ok:
                raise ValueError(message)

    def to_json(self) -> str:
        """The options as JSON, paths absolute, for ``training.json``."""
        values = {
            key: str(Path(value).absolute()) if isinstance(value, Path) else value
            for key, value in dataclasses.asdict(self).items()
        }
        return json.dumps(values, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> TrainingConfig:
        """Read back :meth:`to_json`."""
        values = json.loads(text)
        for key in ("data", "images", "init_from", "init_vocab"):
            if values.get(key) is not None:
                values[key] = Path(values[key])
        return cls(**values)
