"""The run directory: one place names a run's files; its state round-trips exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from captioner.checkpoint import load_checkpoint
from captioner.cli import cli
from captioner.errors import CheckpointError
from captioner.testing import random_tensors
from captioner.training.run_dir import RunDirectory, TrainerState

SMALL = {"depth_multiplier": 0.05, "vocab_rows": 20, "embedding_size": 8, "lstm_units": 8}


def test_state_round_trips_and_older_checkpoints_go(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    rng = np.random.default_rng(0)
    optimizer = [rng.normal(size=(3, 4)).astype(np.float32), np.array(7, np.int64)]
    auxiliary = [rng.normal(size=5).astype(np.float32)]
    first = run.save(random_tensors(seed=1, **SMALL), TrainerState(1, 10, 10, optimizer))
    second = run.save(random_tensors(seed=2, **SMALL), TrainerState(2, 5, 15, optimizer, auxiliary))
    assert (first.name, second.name) == ("model.ckpt-10", "model.ckpt-15")
    assert not list(run.checkpoint_dir.glob("model.ckpt-10*"))
    assert (
        load_checkpoint(run.checkpoint_dir).global_step
        == random_tensors(seed=2, **SMALL)["global_step"]
    )
    state = run.load_state()
    assert (state.phase, state.step, state.global_step) == (2, 5, 15)
    for saved, original in zip(
        state.optimizer + state.auxiliary, optimizer + auxiliary, strict=True
    ):
        np.testing.assert_array_equal(saved, original)
    assert not list(run.path.glob("*.partial.npz"))


def test_a_run_that_never_saved_cannot_be_resumed(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path / "run")
    assert not run.holds_run()
    with pytest.raises(CheckpointError, match=r"nothing to resume: .*training\.json"):
        run.read_config()
    with pytest.raises(CheckpointError, match=r"nothing to resume: no trainer_state\.npz"):
        run.load_state()
    result = CliRunner().invoke(cli, ["train", "--out", str(run.path), "--resume"])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: nothing to resume: {run.config_path} does not exist"
