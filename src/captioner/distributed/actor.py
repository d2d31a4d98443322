"""The callable class Ray Data runs in each actor: one engine loaded once, a batch of image
bytes in, a batch of caption records out.

Each actor loads the model the one way every command does, from the driver's settings, so
the precision and the model files are the driver's choice; TensorFlow's thread pools are
sized to the CPUs the actor was given, never to the whole node it shares with other
actors and with Ray's read tasks. Decoding is per image: one corrupt file is an error row,
not a failed block that Ray would retry until the job fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from captioner.loading import load_engine
from captioner.outputs import record_schema
from captioner.pipeline import caption_batch

if TYPE_CHECKING:
    from captioner.config import Settings
    from captioner.engine import Captioner

__all__ = ["CaptionActor", "actor_settings"]


def actor_settings(settings: Settings, cpus: int) -> Settings:
    """``settings`` with TensorFlow's thread pools sized to ``cpus``, unless given.

    TensorFlow's default is one thread per core of the machine: with several actors on a
    node, each would run that many, and they would fight over the cores.
    """
    given = settings.model_fields_set
    update: dict[str, Any] = {}
    if "intra_op_threads" not in given:
        update["intra_op_threads"] = cpus
    if "inter_op_threads" not in given:
        update["inter_op_threads"] = cpus
    return settings.model_copy(update=update)


class CaptionActor:
    """Loads the engine when Ray starts the actor; captions each batch Ray hands it."""

    def __init__(self, settings: Settings, beam_size: int, max_length: int) -> None:
        """Load the model (each node downloads and verifies it once, under its lock).

        Args:
            settings: the driver's settings, already sized by :func:`actor_settings`.
            beam_size, max_length: the search parameters of every caption.
        """
        self._engine: Captioner = load_engine(settings, progress="off")
        self._beam_size = beam_size
        self._max_length = max_length

    def __call__(self, batch: Mapping[str, np.ndarray]) -> pa.Table:
        """One batch of Ray's ``read_binary_files(..., include_paths=True)`` rows.

        Args:
            batch: ``bytes`` (object array of ``bytes``) and ``path`` (strings), same length.

        Returns:
            One record per row, in order, in ``captioner.outputs.record_schema()``: the
            columns of every output file, also when a block holds only error rows.
        """
        images = [
            (str(path), bytes(data))
            for path, data in zip(batch["path"], batch["bytes"], strict=True)
        ]
        results = caption_batch(
            self._engine, images, beam_size=self._beam_size, max_length=self._max_length
        )
        return pa.Table.from_pylist([r.to_record() for r in results], schema=record_schema())
