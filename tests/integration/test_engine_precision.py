"""The engine in each precision: what runs, what is kept, and what the calibration decides.

The calibration's timings are injected (no timed tests): the decision is checked against a
machine where bf16 is faster and one where it is slower, with the real encoders built and
handed to the calibration.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from captioner.assets import ModelFiles
from captioner.checkpoint import load_checkpoint
from captioner.engine import Captioner
from captioner.precision import Calibration, CalibrationMemory
from captioner.vocabulary import Vocabulary


def _pixels(count: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (count, 299, 299, 3)).astype(np.float32)


def _build(files: ModelFiles, precision: str, calibrate=None, memory=None) -> Captioner:  # type: ignore[no-untyped-def]
    return Captioner(
        load_checkpoint(files.checkpoint),
        Vocabulary.from_file(files.vocab),
        name="tiny",
        checkpoint=str(files.checkpoint),
        precision=precision,  # type: ignore[arg-type]
        calibration_batch_size=2,
        calibrate=calibrate,
        calibration_memory=memory,
    )


class _Timings:
    """A calibration that runs the real encoders once, then reports the given timings."""

    def __init__(self, fp32_s: float, bf16_s: float) -> None:
        self.fp32_s, self.bf16_s = fp32_s, bf16_s
        self.outputs: dict[str, np.ndarray] = {}

    def __call__(self, encoders, batch_size: int) -> Calibration:  # type: ignore[no-untyped-def]
        self.outputs = {name: np.asarray(encode()) for name, encode in encoders.items()}
        return Calibration(batch_size=batch_size, fp32_s=self.fp32_s, bf16_s=self.bf16_s)


def test_fp32_is_the_default_and_skips_the_calibration(tiny_model: ModelFiles) -> None:
    def never(*_: object) -> Calibration:
        raise AssertionError("fp32 must not time the encoder")

    captioner = _build(tiny_model, "fp32", calibrate=never)
    assert captioner.precision == captioner.info.precision == "fp32"
    assert captioner.calibration is None
    default = Captioner.load(tiny_model.checkpoint, tiny_model.vocab)
    assert default.precision == "fp32"
    pixels = _pixels(2)
    assert np.array_equal(default.encode(pixels), captioner.encode(pixels))


@pytest.mark.parametrize(
    ("requested", "fp32_s", "bf16_s", "expected"),
    [
        ("auto", 0.40, 0.20, "bf16"),  # a CPU with native bfloat16
        ("auto", 0.40, 0.62, "fp32"),  # bfloat16 emulated: slower
        ("bf16", 0.40, 0.62, "bf16"),  # asked for: honoured even when slower
    ],
)
def test_the_calibration_decides_what_runs(
    tiny_model: ModelFiles, requested: str, fp32_s: float, bf16_s: float, expected: str
) -> None:
    timings = _Timings(fp32_s, bf16_s)
    captioner = _build(tiny_model, requested, calibrate=timings)
    # Both real encoders were built and run on a batch of the calibration's size.
    assert set(timings.outputs) == {"fp32", "bf16"}
    assert {a.shape for a in timings.outputs.values()} == {(2, captioner.info.image_feature_size)}
    assert captioner.precision == captioner.info.precision == expected
    assert captioner.calibration == Calibration(2, fp32_s, bf16_s)
    # What serves is the encoder chosen: its features are that encoder's.
    features = captioner.encode(np.zeros([2, 299, 299, 3], np.float32))
    np.testing.assert_array_equal(features, timings.outputs[expected])


def test_only_the_chosen_encoders_weights_are_kept(tiny_model: ModelFiles) -> None:
    fp32 = _build(tiny_model, "fp32")
    bf16 = _build(tiny_model, "bf16", calibrate=_Timings(0.4, 0.2))
    auto_fp32 = _build(tiny_model, "auto", calibrate=_Timings(0.4, 0.6))
    weights = load_checkpoint(tiny_model.checkpoint)
    conv_bytes = sum(c.weights.nbytes + c.beta.nbytes for c in weights.convs.values())
    # bf16 halves the encoder's kernels and biases; the decoder stays float32.
    assert fp32.weight_bytes - bf16.weight_bytes == conv_bytes // 2
    assert auto_fp32.weight_bytes == fp32.weight_bytes


def test_explicit_bf16_warns_when_it_is_slower(
    tiny_model: ModelFiles, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="captioner.engine"):
        _build(tiny_model, "bf16", calibrate=_Timings(0.40, 0.62))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "slower than float32" in warnings[0].getMessage()
    assert any("precision bf16 (asked for bf16" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="captioner.engine"):
        _build(tiny_model, "bf16", calibrate=_Timings(0.40, 0.20))
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_bf16_stays_close_to_fp32(tiny_model: ModelFiles) -> None:
    fp32 = Captioner.load(tiny_model.checkpoint, tiny_model.vocab)
    bf16 = Captioner.load(tiny_model.checkpoint, tiny_model.vocab, precision="bf16")
    assert bf16.precision == "bf16" and bf16.calibration is not None
    pixels = _pixels(3)
    want, got = fp32.encode(pixels), bf16.encode(pixels)
    assert got.dtype == np.float32
    assert not np.array_equal(got, want)  # it really computed in bfloat16...
    # ...within bfloat16's rounding (8 bits of mantissa) carried through 94 convolutions.
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.05
    for captions in bf16.caption_arrays(pixels):
        assert 1 <= len(captions) <= 3
        assert all(np.isfinite(c.logprob) and c.logprob <= 0 for c in captions)


def _never(*_: object) -> Calibration:
    raise AssertionError("a remembered calibration must not be timed again")


@pytest.mark.parametrize(
    ("fp32_s", "bf16_s", "auto_runs"), [(0.40, 0.20, "bf16"), (0.4, 0.62, "fp32")]
)
def test_a_remembered_calibration_skips_the_timing_at_the_next_load(
    tiny_model: ModelFiles, tmp_path: Path, fp32_s: float, bf16_s: float, auto_runs: str
) -> None:
    memory = CalibrationMemory(tmp_path / "cache" / "calibrations.json")
    first = _build(tiny_model, "auto", calibrate=_Timings(fp32_s, bf16_s), memory=memory)
    assert first.precision == auto_runs
    stored = json.loads(memory.path.read_text())
    [key] = stored
    assert "TensorFlow" in key and "batch 2" in key
    assert stored[key] == {"batch_size": 2, "fp32_s": fp32_s, "bf16_s": bf16_s}
    # The next loads recall it: no timing, the same decision, one encoder built.
    again = _build(tiny_model, "auto", calibrate=_never, memory=memory)
    assert again.precision == auto_runs and again.calibration == first.calibration
    asked = _build(tiny_model, "bf16", calibrate=_never, memory=memory)
    assert asked.precision == "bf16"
    pixels = _pixels(2)
    reference = _build(tiny_model, "bf16", calibrate=_Timings(fp32_s, bf16_s))
    assert np.array_equal(asked.encode(pixels), reference.encode(pixels))


def test_a_calibration_is_remembered_per_batch_size_and_encoder(
    tiny_model: ModelFiles, tmp_path: Path
) -> None:
    memory = CalibrationMemory(tmp_path / "calibrations.json")
    _build(tiny_model, "auto", calibrate=_Timings(0.4, 0.2), memory=memory)
    other_batch = Captioner(
        load_checkpoint(tiny_model.checkpoint),
        Vocabulary.from_file(tiny_model.vocab),
        name="tiny",
        checkpoint=str(tiny_model.checkpoint),
        precision="auto",
        calibration_batch_size=3,
        calibrate=_Timings(0.4, 0.9),
        calibration_memory=memory,
    )
    assert other_batch.precision == "fp32"  # timed again: another key
    assert len(json.loads(memory.path.read_text())) == 2
    assert CalibrationMemory.key(2, 1000, 4) != CalibrationMemory.key(2, 1001, 4)
    assert CalibrationMemory.key(2, 1000, 4) != CalibrationMemory.key(2, 1000, 2)


def test_a_corrupt_or_unwritable_memory_only_costs_the_timing(
    tiny_model: ModelFiles, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corrupt = CalibrationMemory(tmp_path / "calibrations.json")
    corrupt.path.write_text("{not json")
    timings = _Timings(0.4, 0.2)
    assert _build(tiny_model, "auto", calibrate=timings, memory=corrupt).precision == "bf16"
    assert set(timings.outputs) == {"fp32", "bf16"}  # timed, the corrupt file ignored
    assert len(json.loads(corrupt.path.read_text())) == 1  # and replaced by a valid one
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    unwritable = CalibrationMemory(blocked / "calibrations.json")  # its "directory" is a file
    with caplog.at_level(logging.INFO, logger="captioner.precision"):
        assert _build(tiny_model, "auto", calibrate=_Timings(0.4, 0.2), memory=unwritable)
    assert "could not be remembered" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "calibrations.json"]
