"""What the benchmark and load scripts share: a ``captioner serve`` process on the full-size
checkpoint, its memory (Linux ``/proc``), the images to send, one median and one percentile,
and the figures file each script writes (:func:`write_figures`).

Used by ``bench_server.py``, ``bench_startup.py``, ``bench_caption.py``, ``bench_bf16_ways.py``,
``bench_collection.py``, ``bench_ray.py``, ``bench_alt_text.py``, ``burst.py``, ``soak.py``,
``deploy_footprint.py`` and ``precision_accuracy.py``; ``figures.py`` reads what they write.
Every percentile (p50, p90, p99) is :func:`percentile`'s (nearest rank), every median of
repeated measurements :func:`statistics.median`'s, so a figure of one script means what it
means in another.

Not a script itself: Python puts this directory first on ``sys.path`` when it runs a script
from here, so ``import loadkit`` finds it.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import io
import json
import math
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from captioner.assets import ModelFiles, model_files_in
from captioner.precision import NATIVE_BF16_FLAGS, cpu_fields

REPO = Path(__file__).resolve().parents[1]
FIGURES_DIR = REPO / "docs" / "figures"

# The machine's load when the script started: a figure's load average is given at both ends.
_LOAD_AT_START = os.getloadavg()[0]

__all__ = [
    "FIGURES_DIR",
    "ModelFiles",
    "RssSampler",
    "cpu_name",
    "free_port",
    "full_size_model",
    "in_child",
    "machine",
    "median_time_s",
    "memory_mib",
    "percentile",
    "photo_jpeg",
    "reset_peak",
    "start_server",
    "stop_server",
    "wait_ready",
    "write_figures",
    "write_photos",
]


def cpu_name() -> str:
    """The CPU's model name, as ``lscpu`` shows it."""
    return cpu_fields().get("model name", "unknown")


def machine() -> dict[str, Any]:
    """What a figure needs to be read and compared: the CPU (name, family and model, cores,
    native bfloat16), TensorFlow's version (from the package's metadata: importing it here
    would change the memory the scripts measure) and the load average at the script's start
    and now."""
    fields = cpu_fields()
    flags = set(fields.get("flags", "").split())
    tensorflow = "not installed"
    for package in ("tensorflow-cpu", "tensorflow"):
        try:
            tensorflow = importlib.metadata.version(package)
            break
        except importlib.metadata.PackageNotFoundError:
            continue
    return {
        "cpu": cpu_name(),
        "cpu_family": fields.get("cpu family", "unknown"),
        "cpu_model": fields.get("model", "unknown"),
        "cpus": os.cpu_count(),
        "bf16": sorted(flags & NATIVE_BF16_FLAGS),
        "tensorflow": tensorflow,
        "load_average": [round(_LOAD_AT_START, 2), round(os.getloadavg()[0], 2)],
    }


def write_figures(run: str, figures: dict[str, Any], *, script: str | None = None) -> Path:
    """Record ``figures`` as run ``run`` of this script in ``docs/figures/<script>.json``,
    with the command, the date and :func:`machine`, replacing that run's last figures and
    keeping the file's other runs.

    The documentation quotes its figures from these files and ``tests/docs/test_figures.py``
    holds the pages to them, so a figure re-measured here cannot stay old on a page.
    ``run`` names what the options changed (``"fp32"``, ``"flat"``): the pages cite a run
    by that name. Values are plain JSON, in the unit their key names (``_ms``, ``_mib``).
    """
    name = script or Path(sys.argv[0]).stem
    path = FIGURES_DIR / f"{name}.json"
    document = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    document["script"] = f"scripts/{name}.py"
    document["runs"][run] = {
        "command": shlex.join(["python", f"scripts/{name}.py", *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.timezone.utc).date().isoformat(),
        "machine": machine(),
        "figures": figures,
    }
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"figures written to {path} (run {run!r})", flush=True)
    return path


def median_time_s(fn: Callable[[], object], repeats: int) -> float:
    """The median of ``repeats`` timed calls of ``fn``, in seconds."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0 to 1) of ``values`` by nearest rank over ``n - 1`` intervals,
    so ``q=0.5`` of an odd count is its median; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[round(q * (len(ordered) - 1))]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def full_size_model(directory: Path, model_dir: Path | None = None) -> ModelFiles:
    """``model_dir``'s model, or the full-size layout with seeded random values written to
    ``directory`` (the real weights are not downloadable here; the memory is the same).

    A child process writes it: this process must not load TensorFlow itself, because the
    server releases the library pages only TensorFlow's import used, and the kernel keeps
    any page another process maps (the server's memory would read higher: see "Measuring
    memory" in ``docs/reliability.md``).
    """
    if model_dir is not None:
        return model_files_in(model_dir)
    code = (
        "import sys, pathlib; "
        "from captioner.testing import write_full_size_checkpoint; "
        "write_full_size_checkpoint(pathlib.Path(sys.argv[1]))"
    )
    in_child(code, str(directory))
    return model_files_in(directory)


def in_child(code: str, *args: str) -> str:
    """Run Python ``code`` with ``args`` in a child process, TensorFlow's log quiet, and
    return what it printed: work that needs TensorFlow, kept out of this process (see
    :func:`full_size_model`)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-c", code, *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout


def photo_jpeg(width: int, height: int, *, noise: float, quality: int, seed: int = 0) -> bytes:
    """A JPEG of smooth gradients and grain; ``noise`` and ``quality`` set its size."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width, y / height, (x + y) / (width + height)], axis=-1) * 200
    pixels = np.clip(base + rng.normal(0, noise, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def write_photos(directory: Path, count: int) -> list[Path]:
    """``count`` distinct 640x480 photo-like JPEGs (about 60 KB each) in ``directory``: the
    collection the collection and Ray benchmarks caption."""
    directory.mkdir(parents=True)
    paths = []
    for index in range(count):
        path = directory / f"{index:06d}.jpg"
        path.write_bytes(photo_jpeg(640, 480, noise=12, quality=85, seed=index))
        paths.append(path)
    return paths


def memory_mib(pid: int) -> tuple[float, float]:
    """``(resident, peak resident)`` of ``pid`` in MiB (VmRSS, VmHWM; the kernel counts kB,
    that is KiB)."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    rss, hwm = (int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM"))
    return rss, hwm


def reset_peak(pid: int) -> None:
    """Restart ``pid``'s VmHWM from its current resident size (Linux 4.0+)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


class RssSampler:
    """Samples a process's resident memory every ``interval_s`` in a thread, for a peak
    that VmHWM confirms and a curve over time."""

    def __init__(self, pid: int, interval_s: float = 0.02) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[tuple[float, float]] = []  # (monotonic time, MiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mib(self) -> float:
        return max((mib for _, mib in self.samples), default=float("nan"))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), memory_mib(self.pid)[0]))
            self._stop.wait(self.interval_s)


def start_server(
    files: ModelFiles,
    port: int,
    *args: str,
    env: dict[str, str] | None = None,
    launcher: Sequence[str] = ("-m", "captioner"),
) -> subprocess.Popen[bytes]:
    """``captioner serve`` on 127.0.0.1:``port`` with ``args``; returns once it is ready.
    ``launcher``: the interpreter's arguments that run the command line."""
    command = [
        sys.executable, *launcher, "serve",
        "--host", "127.0.0.1", "--port", str(port),
        "--checkpoint", str(files.checkpoint), "--vocab", str(files.vocab), "--offline",
        "--log-level", "warning", *args,
    ]  # fmt: skip
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CAPTIONER_")}
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    environment.update(env or {})
    process = subprocess.Popen(command, env=environment)
    wait_ready(f"http://127.0.0.1:{port}", process)
    return process


def wait_ready(url: str, process: subprocess.Popen[Any], deadline_s: float = 600) -> None:
    """Return once ``url``'s readiness probe answers 200, polled every 0.2 s (the resolution
    of a measured time to ready); exit if the server exits or ``deadline_s`` passes."""
    deadline = time.monotonic() + deadline_s
    while True:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with status {process.returncode}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=5).is_success:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise SystemExit("the server never became ready")
        time.sleep(0.2)


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(60)
