"""A training run's directory: what the engine loads, and what resuming needs.

::

    <run>/checkpoint/model.ckpt-<step>.*   the model in the original layout (the engine loads it)
    <run>/checkpoint/checkpoint            its TensorFlow state file
    <run>/word_counts.txt                  the vocabulary
    <run>/training.json                    the run's options, read back by ``--resume``
    <run>/trainer_state.npz                phase, step and optimizer moments at that checkpoint

The checkpoint is written before the trainer state, and the state replaces the old one in
one rename, so the state always describes a checkpoint that is on disk.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from captioner.assets import CHECKPOINT_DIRNAME, VOCAB_FILENAME
from captioner.checkpoint import save_checkpoint
from captioner.errors import CheckpointError
from captioner.training.config import TrainingConfig

__all__ = ["CONFIG_FILENAME", "STATE_FILENAME", "RunDirectory", "TrainerState"]

CONFIG_FILENAME = "training.json"
STATE_FILENAME = "trainer_state.npz"
CHECKPOINT_NAME = "model.ckpt"


@dataclass(frozen=True)
class TrainerState:
    """Where a run stopped, saved with each checkpoint.

    Attributes:
        phase: the phase being trained (1: decoder only, 2: full model).
        step: steps of that phase done.
        global_step: the step saved in the checkpoint (both phases counted).
        optimizer: the phase's optimizer variables, in the optimizer's order.
        auxiliary: the auxiliary word predictor's variables (empty without one).
    """

    phase: int
    step: int
    global_step: int
    optimizer: list[np.ndarray]
    auxiliary: list[np.ndarray] = field(default_factory=list)


class RunDirectory:
    """The files of one training run, named in one place."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILENAME

    @property
    def state_path(self) -> Path:
        return self.path / STATE_FILENAME

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIRNAME

    @property
    def vocab_path(self) -> Path:
        return self.path / VOCAB_FILENAME

    def holds_run(self) -> bool:
        """True when a run has started here (its options or a checkpoint exist)."""
        return self.config_path.exists() or self.checkpoint_dir.exists()

    def read_config(self) -> TrainingConfig:
        """The options the run started with.

        Raises:
            CheckpointError: no run was started here.
        """
        if not self.config_path.is_file():
            raise CheckpointError(f"nothing to resume: {self.config_path} does not exist")
        return TrainingConfig.from_json(self.config_path.read_text())

    def start(self, config: TrainingConfig) -> None:
        """Begin a new run here: record its options, forget any earlier trainer state."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.state_path.unlink(missing_ok=True)
        self.config_path.write_text(config.to_json())

    def checkpoint_prefix(self, global_step: int) -> Path:
        """The prefix of the checkpoint saved at ``global_step``."""
        return self.checkpoint_dir / f"{CHECKPOINT_NAME}-{global_step}"

    def load_state(self) -> TrainerState:
        """The state of an interrupted run.

        Raises:
            CheckpointError: the run saved no state (it never reached a checkpoint).
        """
        if not self.state_path.is_file():
            raise CheckpointError(
                f"nothing to resume: no {STATE_FILENAME} (a run saves it at each checkpoint)",
                path=self.path,
            )
        with np.load(self.state_path) as saved:
            values = {key: saved[key] for key in saved.files}
        return TrainerState(
            phase=int(values["phase"]),
            step=int(values["step"]),
            global_step=int(values["global_step"]),
            optimizer=[values[f"optimizer_{i}"] for i in range(int(values["optimizers"]))],
            auxiliary=[values[f"auxiliary_{i}"] for i in range(_count(values, "auxiliary_"))],
        )

    def save(self, tensors: Mapping[str, np.ndarray], state: TrainerState) -> Path:
        """Write the checkpoint, then the state, then drop older checkpoints.

        Returns:
            The new checkpoint's prefix.
        """
        prefix = self.checkpoint_prefix(state.global_step)
        save_checkpoint(prefix, tensors)
        arrays: dict[str, np.ndarray] = {
            "phase": np.asarray(state.phase),
            "step": np.asarray(state.step),
            "global_step": np.asarray(state.global_step),
            "optimizers": np.asarray(len(state.optimizer)),
        }
        arrays.update({f"optimizer_{i}": value for i, value in enumerate(state.optimizer)})
        arrays.update({f"auxiliary_{i}": value for i, value in enumerate(state.auxiliary)})
        partial = self.path / (STATE_FILENAME + ".partial.npz")
        np.savez(partial, allow_pickle=False, **arrays)
        os.replace(partial, self.state_path)
        for old in self.checkpoint_dir.glob(f"{CHECKPOINT_NAME}-*"):
            if not old.name.startswith(prefix.name + "."):
                old.unlink()
        return prefix


def _count(values: Mapping[str, object], prefix: str) -> int:
    return sum(1 for key in values if key.startswith(prefix))
