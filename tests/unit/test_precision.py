"""How the precision is chosen: the calibration's timing and the decision, with fake clocks."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from captioner.precision import (
    MIN_BF16_SPEEDUP,
    Calibration,
    choose_precision,
    measure_encoders,
)


def _calibration(fp32_s: float, bf16_s: float) -> Calibration:
    return Calibration(batch_size=8, fp32_s=fp32_s, bf16_s=bf16_s)


def test_auto_picks_bf16_only_where_it_is_clearly_faster() -> None:
    assert choose_precision("auto", _calibration(0.40, 0.20)) == ("bf16", None)  # 2x
    assert choose_precision("auto", _calibration(0.40, 0.62)) == ("fp32", None)  # 0.65x
    # Faster, but within what a short measurement cannot tell apart.
    barely = _calibration(0.40, 0.40 / (MIN_BF16_SPEEDUP - 0.05))
    assert choose_precision("auto", barely) == ("fp32", None)
    enough = _calibration(0.40, 0.40 / (MIN_BF16_SPEEDUP + 0.05))
    assert choose_precision("auto", enough) == ("bf16", None)


def test_explicit_bf16_runs_bf16_and_warns_only_when_slower() -> None:
    assert choose_precision("bf16", _calibration(0.40, 0.20)) == ("bf16", None)
    chosen, warning = choose_precision("bf16", _calibration(0.40, 0.62))
    assert chosen == "bf16"
    assert warning is not None and "slower" in warning and "0.65x" in warning


def test_fp32_needs_no_calibration_and_the_others_do() -> None:
    assert choose_precision("fp32", None) == ("fp32", None)
    assert choose_precision("fp32", _calibration(0.40, 0.10)) == ("fp32", None)
    for requested in ("bf16", "auto"):
        with pytest.raises(ValueError, match="calibration"):
            choose_precision(requested, None)  # type: ignore[arg-type]


class _FakeClock:
    """A clock that only moves when a fake encoder 'runs'."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls: list[str] = []

    def __call__(self) -> float:
        return self.now

    def encoder(self, name: str, durations: list[float]) -> Callable[[], None]:
        remaining = iter(durations)

        def run() -> None:
            self.calls.append(name)
            self.now += next(remaining)

        return run


def test_measure_encoders_skips_the_first_call_alternates_and_keeps_the_fastest() -> None:
    clock = _FakeClock()
    encoders = {
        # The first call traces the graph (slow, not counted); one timed call is disturbed.
        "fp32": clock.encoder("fp32", [9.0, 0.41, 0.40, 0.95]),
        "bf16": clock.encoder("bf16", [5.0, 0.21, 0.70, 0.20]),
    }
    calibration = measure_encoders(encoders, batch_size=8, repeats=3, clock=clock)
    assert clock.calls == ["fp32", "bf16"] + ["fp32", "bf16"] * 3
    assert calibration.batch_size == 8
    assert (calibration.fp32_s, calibration.bf16_s) == pytest.approx((0.40, 0.20))
    assert calibration.speedup == pytest.approx(2.0)
    assert "fp32 400 ms, bf16 200 ms (2.00x)" in calibration.describe()
