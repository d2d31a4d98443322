"""Which arithmetic the engine runs in, and how ``auto`` decides it by measurement.

``fp32`` is the original model's arithmetic: the captions and probabilities of the
original code. ``bf16`` runs the Inception encoder and the decoder's matrix products in
bfloat16 (float32's range, 8 bits of mantissa): on CPUs with native bfloat16 dot products
(AVX512_BF16, AMX) the encoder runs up to twice as fast, on others it is emulated and
slower. CPU flags do not tell which (a hypervisor may show ``avx512_bf16`` on a CPU whose
bfloat16 kernels are slower), so ``auto`` times a few batches of the real encoder in both
precisions at load and keeps bfloat16 only if it is clearly faster.

That timing builds the float32 encoder beside the bfloat16 one and runs each a few times:
about a second of every start. A :class:`CalibrationMemory` keeps the result in a small
file, keyed by what decides it (the CPU model, its cores, TensorFlow's version, the batch
size and the encoder's size), so that the next start on the same kind of machine skips it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "MIN_BF16_SPEEDUP",
    "NATIVE_BF16_FLAGS",
    "Calibration",
    "CalibrationMemory",
    "Precision",
    "PrecisionChoice",
    "choose_precision",
    "cpu_fields",
    "measure_encoders",
    "tf_dtype_name",
]

logger = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16"]
PrecisionChoice = Literal["fp32", "bf16", "auto"]

# bf16 must beat fp32 by this factor for ``auto`` to pick it: below it, the gain is within
# the noise of a short measurement and not worth the changed probabilities.
MIN_BF16_SPEEDUP = 1.2


def tf_dtype_name(precision: Precision) -> str:
    """The TensorFlow dtype a precision computes in: ``float32`` or ``bfloat16``."""
    return {"fp32": "float32", "bf16": "bfloat16"}[precision]


@dataclass(frozen=True)
class Calibration:
    """The encoder timed in both precisions at load, on the same batch.

    Attributes:
        batch_size: images per timed encoder call.
        fp32_s: seconds of the fastest call in float32.
        bf16_s: seconds of the fastest call in bfloat16.
    """

    batch_size: int
    fp32_s: float
    bf16_s: float

    @property
    def speedup(self) -> float:
        """How many times faster bf16 ran than fp32 (below 1: slower)."""
        return self.fp32_s / self.bf16_s

    def describe(self) -> str:
        """One line for the log: both timings and the ratio."""
        return (
            f"encoder batch of {self.batch_size}: fp32 {self.fp32_s * 1000:.0f} ms, "
            f"bf16 {self.bf16_s * 1000:.0f} ms ({self.speedup:.2f}x)"
        )


def measure_encoders(
    encoders: Mapping[Precision, Callable[[], object]],
    *,
    batch_size: int,
    repeats: int = 2,
    clock: Callable[[], float] = time.perf_counter,
) -> Calibration:
    """Time the encoder in both precisions: one untimed call each, then ``repeats`` rounds.

    The first call of each traces its graph and sets up its kernels (the serving encoder's
    warm-up, done here anyway). The timed calls alternate between the precisions, so a
    neighbour's load that comes and goes weighs on both alike, and the fastest call of each
    counts: other work on the machine only ever adds time.

    Args:
        encoders: ``"fp32"`` and ``"bf16"`` -> a call that encodes one fixed batch.
        batch_size: the images in that batch, for the report.
        repeats: timed calls per precision.
        clock: seconds, monotonic.
    """
    for encode in encoders.values():
        encode()
    times: dict[Precision, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(repeats):
        for precision in times:
            started = clock()
            encoders[precision]()
            times[precision].append(clock() - started)
    return Calibration(
        batch_size=batch_size,
        fp32_s=min(times["fp32"]),
        bf16_s=min(times["bf16"]),
    )


def choose_precision(
    requested: PrecisionChoice, calibration: Calibration | None
) -> tuple[Precision, str | None]:
    """The precision to run, and a warning for the log when the request is a poor choice.

    ``fp32`` and ``bf16`` are honoured as asked (bf16 with a warning when the calibration
    found it slower). ``auto`` picks bf16 only when it ran at least
    :data:`MIN_BF16_SPEEDUP` times faster.

    Raises:
        ValueError: ``bf16`` or ``auto`` without a calibration.
    """
    if requested == "fp32":
        return "fp32", None
    if calibration is None:
        raise ValueError(f"precision {requested!r} needs the encoder calibration")
    if requested == "bf16":
        if calibration.speedup < 1.0:
            return "bf16", (
                "precision bf16 was asked for, but bfloat16 is slower than float32 on this "
                f"CPU ({calibration.describe()}); 'fp32' or 'auto' would be faster"
            )
        return "bf16", None
    return ("bf16" if calibration.speedup >= MIN_BF16_SPEEDUP else "fp32"), None


class CalibrationMemory:
    """Calibrations remembered in a JSON file, one per kind of machine and model.

    The key (:meth:`key`) holds everything the ratio depends on, so a file shared by
    machines of several kinds (a volume, a home directory) gives each its own. A file that
    is missing, unreadable or corrupt is an empty memory, and a write that fails is only
    logged: remembering saves time, it is never needed. Delete the file to time again.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @staticmethod
    def key(batch_size: int, encoder_values: int, threads: int | None) -> str:
        """What a calibration depends on: the CPU, the cores TensorFlow may use, its
        version, the batch size and the encoder (its number of weights)."""
        import tensorflow as tf

        cores = threads or len(os.sched_getaffinity(0))
        return (
            f"{_cpu_model()} | {cores} cores | TensorFlow {tf.__version__} | "
            f"batch {batch_size} | encoder {encoder_values} values"
        )

    def recall(self, key: str) -> Calibration | None:
        """The calibration remembered under ``key``, if any."""
        entry = self._entries().get(key)
        try:
            return Calibration(**entry) if isinstance(entry, dict) else None
        except TypeError:  # written by another version: time again
            return None

    def remember(self, key: str, calibration: Calibration) -> None:
        """Keep ``calibration`` under ``key`` (the file replaced whole, never torn)."""
        entries = {**self._entries(), key: asdict(calibration)}
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps(entries, indent=1), encoding="utf-8")
            os.replace(partial, self.path)
        except OSError as exc:
            logger.info("the calibration could not be remembered in %s: %s", self.path, exc)
        finally:
            with contextlib.suppress(OSError):  # gone after the replace, or never written
                partial.unlink(missing_ok=True)

    def _entries(self) -> dict[str, object]:
        try:
            entries = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return entries if isinstance(entries, dict) else {}


# The CPU flags of native bfloat16 dot products.
NATIVE_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def cpu_fields() -> dict[str, str]:
    """The first processor's fields of ``/proc/cpuinfo`` (``model name``, ``cpu family``,
    ``model``, ``flags``, ...); empty where the file does not exist."""
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if not line.strip():
                break  # the first processor's block is enough
            name, _, value = line.partition(":")
            fields.setdefault(name.strip(), value.strip())
    return fields


def _cpu_model() -> str:
    """The CPU's model name, family and model number, and whether it has native bfloat16."""
    fields = cpu_fields()
    native = sorted(set(fields.get("flags", "").split()) & NATIVE_BF16_FLAGS)
    name = fields.get("model name") or platform.processor() or platform.machine()
    family = f"family {fields['cpu family']} model {fields['model']}" if "model" in fields else ""
    return ", ".join(part for part in (name, family, " ".join(native)) if part)
