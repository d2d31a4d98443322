"""Checkpoint reading: the original layout, LSTM namings, widths from shapes, clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from captioner.checkpoint import (
    LSTM_NAMINGS,
    im2txt_tensor_shapes,
    load_checkpoint,
    resolve_checkpoint_prefix,
    save_checkpoint,
)
from captioner.encoder import inception_v3_layout
from captioner.errors import CheckpointError
from captioner.testing import random_tensors, write_random_checkpoint

SMALL = {"depth_multiplier": 0.1, "vocab_rows": 40, "embedding_size": 16, "lstm_units": 8}


def test_full_layout_is_the_original_383_tensors() -> None:
    shapes = im2txt_tensor_shapes()
    assert len(shapes) == 383
    # Spot checks from the original checkpoint, name quirks included.
    assert shapes["InceptionV3/Conv2d_1a_3x3/weights"] == (3, 3, 3, 32)
    assert shapes["InceptionV3/Mixed_5c/Branch_1/Conv_1_0c_5x5/weights"] == (5, 5, 48, 64)
    assert shapes["InceptionV3/Mixed_6a/Branch_0/Conv2d_1a_1x1/weights"] == (3, 3, 288, 384)
    assert shapes["InceptionV3/Mixed_7b/Branch_1/Conv2d_0b_3x1/weights"] == (3, 1, 384, 384)
    assert shapes["InceptionV3/Mixed_7c/Branch_1/Conv2d_0c_3x1/weights"] == (3, 1, 384, 384)
    assert shapes["InceptionV3/Mixed_7c/Branch_3/Conv2d_0b_1x1/weights"] == (1, 1, 2048, 192)
    assert shapes["image_embedding/weights"] == (2048, 512)
    assert shapes["lstm/basic_lstm_cell/kernel"] == (1024, 2048)
    assert shapes["logits/weights"] == (512, 12000)
    conv_params = sum(
        int(np.prod(s))
        for n, s in shapes.items()
        if n.endswith("/weights") and n.startswith("InceptionV3/")
    )
    assert conv_params == 21_751_136  # the original checkpoint's conv kernels
    total = sum(int(np.prod(s)) for s in shapes.values())
    assert total == 37_250_561  # every value in model2.ckpt-2000000
    assert "InceptionV3/Conv2d_1a_3x3/BatchNorm/gamma" not in shapes


def test_width_multiplier_scales_channels_with_a_floor() -> None:
    convs, features = inception_v3_layout(0.5)
    by_name = {c.name: c.kernel_shape for c in convs}
    assert by_name["Conv2d_1a_3x3"] == (3, 3, 3, 16)
    assert features == 1024
    convs, _ = inception_v3_layout(0.01)
    assert min(c.kernel_shape[3] for c in convs) == 16


@pytest.mark.parametrize("naming", range(len(LSTM_NAMINGS)))
def test_every_lstm_naming_generation_loads(tmp_path: Path, naming: int) -> None:
    files = write_random_checkpoint(tmp_path, lstm_naming=naming, **SMALL)
    weights = load_checkpoint(files.checkpoint)
    assert weights.lstm_kernel.shape == (16 + 8, 32)
    assert (weights.embedding_size, weights.lstm_units, weights.vocab_rows) == (16, 8, 40)


@pytest.mark.parametrize(
    "form",
    [
        "",
        "checkpoint",
        "model.ckpt-77",
        "model.ckpt-77.index",
        "model.ckpt-77.data-00000-of-00001",
        "model.ckpt-77.meta",
    ],
)
def test_every_way_of_naming_a_checkpoint_resolves_to_its_prefix(tmp_path: Path, form: str) -> None:
    files = write_random_checkpoint(tmp_path, prefix_name="model.ckpt-77", **SMALL)
    (files.checkpoint / "model.ckpt-77.meta").write_bytes(b"a TF1 graph, never read")
    prefix = files.checkpoint / "model.ckpt-77"
    assert resolve_checkpoint_prefix(files.checkpoint / form) == prefix
    loaded = load_checkpoint(files.checkpoint / form)
    assert loaded.global_step == load_checkpoint(prefix).global_step


def test_a_file_of_no_prefix_is_refused_with_the_accepted_forms(tmp_path: Path) -> None:
    files = write_random_checkpoint(tmp_path, **SMALL)
    stray = files.checkpoint / "notes.txt"
    stray.write_text("hello")
    with pytest.raises(CheckpointError, match=r"notes\.txt: not a checkpoint file; give a dir"):
        resolve_checkpoint_prefix(stray)


def test_state_file_with_foreign_absolute_path_is_resolved_locally(tmp_path: Path) -> None:
    files = write_random_checkpoint(tmp_path, prefix_name="model2.ckpt-2000000", **SMALL)
    (files.checkpoint / "checkpoint").write_text(
        'model_checkpoint_path: "/home/someone/im2txt/model2.ckpt-2000000"\n'
    )
    assert load_checkpoint(files.checkpoint).vocab_rows == 40


def _write(tmp_path: Path, tensors: dict[str, np.ndarray]) -> Path:
    return save_checkpoint(tmp_path / "ckpt" / "model.ckpt-1", tensors)


def test_missing_tensor_is_named(tmp_path: Path) -> None:
    tensors = random_tensors(seed=0, **SMALL)
    del tensors["InceptionV3/Mixed_6b/Branch_2/Conv2d_0d_7x1/BatchNorm/moving_mean"]
    prefix = _write(tmp_path, tensors)
    with pytest.raises(
        CheckpointError,
        match=r"missing tensor 'InceptionV3/Mixed_6b/Branch_2/"
        r"Conv2d_0d_7x1/BatchNorm/moving_mean'",
    ) as info:
        load_checkpoint(prefix)
    assert str(prefix) in str(info.value)


def test_wrong_shape_names_tensor_and_both_shapes(tmp_path: Path) -> None:
    tensors = random_tensors(seed=0, **SMALL)
    tensors["logits/weights"] = np.zeros((8, 39), np.float32)
    with pytest.raises(
        CheckpointError,
        match=r"'logits/weights' has shape \[8, 39\], "
        r"expected \[8, 40\]",
    ):
        load_checkpoint(_write(tmp_path, tensors))


def test_conv_that_does_not_chain_is_reported(tmp_path: Path) -> None:
    tensors = random_tensors(seed=0, **SMALL)
    name = "InceptionV3/Conv2d_2a_3x3/weights"
    tensors[name] = np.zeros((3, 3, 99, 16), np.float32)
    with pytest.raises(CheckpointError, match=r"Conv2d_2a_3x3/weights' has shape \[3, 3, 99, 16\]"):
        load_checkpoint(_write(tmp_path, tensors))


def test_missing_lstm_lists_the_accepted_names(tmp_path: Path) -> None:
    tensors = random_tensors(seed=0, **SMALL)
    del tensors["lstm/basic_lstm_cell/kernel"]
    with pytest.raises(CheckpointError, match=r"missing LSTM kernel.*BasicLSTMCell/Linear/Matrix"):
        load_checkpoint(_write(tmp_path, tensors))


def test_truncated_data_file(tmp_path: Path) -> None:
    files = write_random_checkpoint(tmp_path, **SMALL)
    data = next(files.checkpoint.glob("*.data-*"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"truncated|unreadable"):
        load_checkpoint(files.checkpoint)


@pytest.mark.parametrize("remove", ["index", "data", "state"])
def test_missing_files(tmp_path: Path, remove: str) -> None:
    files = write_random_checkpoint(tmp_path, **SMALL)
    pattern = {"index": "*.index", "data": "*.data-*", "state": "checkpoint"}[remove]
    for path in files.checkpoint.glob(pattern):
        path.unlink()
    message = {"index": "index file not found", "data": "data file", "state": "no 'checkpoint'"}
    with pytest.raises(CheckpointError, match=message[remove]):
        load_checkpoint(files.checkpoint)


def test_not_a_checkpoint_at_all(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nothing-here: no such checkpoint; give a dir"):
        load_checkpoint(tmp_path / "nothing-here")
    garbage = tmp_path / "junk.ckpt"
    (tmp_path / "junk.ckpt.index").write_bytes(b"not a table")
    (tmp_path / "junk.ckpt.data-00000-of-00001").write_bytes(b"nope")
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        load_checkpoint(garbage)
    shutil.rmtree(tmp_path)


def test_unreadable_state_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    # A state file that cannot be read (here not text; in production, permissions).
    (tmp_path / "checkpoint").write_bytes(b"\xff\xfe\x00 binary")
    with pytest.raises(CheckpointError, match="cannot read the state file"):
        load_checkpoint(tmp_path)
