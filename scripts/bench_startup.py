#!/usr/bin/env python3
"""How long from ``captioner serve`` to the first caption? Start-up, timed and broken down.

Writes a full-size checkpoint of the original layout with seeded random values (or takes
``--model-dir``), then starts ``captioner serve`` ``--starts`` times per precision and
measures, from the process's start, the time to the first answered ``/model/predict`` of
one 640x480 JPEG (polled every 50 ms; the answers before it are 503s), which is what a
scaled-up replica and every ``captioner caption`` run pay. From the server's own log: when
it was listening (Python's and the server's imports, TensorFlow's) and how long the model
took to load and warm up. In bf16 the first start of each round has no remembered
calibration (a fresh cache directory) and the later ones recall it, as a restarted replica
on the same kind of machine would.

Then, in child processes, ``python -X importtime`` of TensorFlow and of the server's code,
for the largest parts of the import.

``--python`` and ``--src`` measure another installation or another checkout (the state
before a change, say) with the same script: ``--python`` is that environment's
interpreter, ``--src`` a ``src/`` directory put first on its path. ``--label`` names the
run in ``docs/figures/bench_startup.json``.

``--compare NAME=COMMAND`` times another server with MAX's API in the same run, on the same
checkpoint and image, to its first caption (MAX's own code, say): COMMAND is split like a
shell line, with ``{port}``, ``{checkpoint}`` and ``{vocab}`` filled in, and its process is
ended with SIGTERM after each start.

Usage: python scripts/bench_startup.py [--precision fp32 bf16] [--starts 3]
                                       [--python EXE] [--src DIR] [--label NAME]
                                       [--compare NAME=COMMAND ...]
Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from loadkit import free_port, full_size_model, photo_jpeg, write_figures

_LOADED = re.compile(r"loaded from .* in ([\d.]+) s \(warm-up ([\d.]+) s\)")


def one_start(
    python: str, files: Any, precision: str, env: dict[str, str], image: bytes
) -> dict[str, float]:
    """Start ``captioner serve`` once; seconds from start to listening, loaded and first
    caption."""
    port = free_port()
    command = [
        python, "-m", "captioner", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--checkpoint", str(files.checkpoint), "--vocab", str(files.vocab), "--offline",
        "--precision", precision, "--log-level", "info",
    ]  # fmt: skip
    marks: dict[str, float] = {}

    def read_line(line: str, now: float) -> None:
        if "listening on" in line:
            marks.setdefault("listening_s", now)
        elif match := _LOADED.search(line):
            marks["load_s"], marks["warmup_s"] = float(match[1]), float(match[2])

    marks["first_caption_s"] = first_caption_s(command, port, env, image, read_line)
    return marks


def other_start(template: str, files: Any, env: dict[str, str], image: bytes) -> dict[str, float]:
    """Start another server (``--compare``) once; seconds from start to its first caption."""
    port = free_port()
    fields = {"port": port, "checkpoint": files.checkpoint, "vocab": files.vocab}
    command = [part.format(**fields) for part in shlex.split(template)]
    return {"first_caption_s": first_caption_s(command, port, env, image)}


def first_caption_s(
    command: list[str],
    port: int,
    env: dict[str, str],
    image: bytes,
    read_line: Callable[[str, float], None] | None = None,
) -> float:
    """Run ``command`` until ``/model/predict`` on ``port`` first answers 200 (MAX's API),
    and return the seconds since its start; ``read_line`` sees its stderr with the time."""
    started = time.monotonic()
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)

    def read_log() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            if read_line is not None:
                read_line(line, time.monotonic() - started)

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{port}/model/predict"
    try:
        with httpx.Client(timeout=60) as client:
            while time.monotonic() - started < 300:
                if process.poll() is not None:
                    raise SystemExit(f"{command[0]} exited with status {process.returncode}")
                try:
                    answer = client.post(url, files={"image": ("photo.jpg", image)})
                    if answer.status_code == 200:
                        return time.monotonic() - started
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
            raise SystemExit("no caption within 300 s")
    finally:
        process.terminate()
        process.wait(60)
        reader.join(10)


def import_times(python: str, env: dict[str, str]) -> dict[str, float]:
    """Seconds of the largest parts of the import, from ``-X importtime`` (cumulative)."""
    parts = {
        "tensorflow": ("tensorflow", "tensorflow"),
        "ml_dtypes": ("tensorflow", "ml_dtypes"),
        "keras": ("tensorflow", "keras._tf_keras"),
        "server_code": ("captioner.api.server", "captioner.api.server"),
    }
    times: dict[str, float] = {}
    for name, (module, part) in parts.items():
        runs = []
        for _ in range(3):
            done = subprocess.run(
                [python, "-X", "importtime", "-c", f"import {module}"],
                env=env, capture_output=True, text=True, check=True,
            )  # fmt: skip
            for line in done.stderr.splitlines():
                fields = line.split("|")
                if len(fields) == 3 and fields[2].strip() == part:
                    runs.append(int(fields[1]) / 1e6)
                    break
        times[f"{name}_s"] = round(statistics.median(runs), 2) if runs else 0.0
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--src", type=Path, help="a src/ directory to run instead")
    parser.add_argument("--label", default="current")
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="NAME=COMMAND",
        help="also time another server with MAX's API, started by COMMAND ({port}, "
        "{checkpoint} and {vocab} filled in); repeatable",
    )
    args = parser.parse_args()

    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPTIONER_")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if args.src:
        env["PYTHONPATH"] = str(args.src.resolve())
    image = photo_jpeg(640, 480, noise=12, quality=85, seed=1)
    figures: dict[str, Any] = {"label": args.label}
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as scratch:
        files = full_size_model(Path(scratch) / "model", args.model_dir)
        for precision in args.precision:
            cache = Path(scratch) / f"cache-{precision}"
            starts = []
            for index in range(args.starts):
                if index == 0:  # the first start of the round has nothing remembered
                    shutil.rmtree(cache, ignore_errors=True)
                marks = one_start(
                    args.python, files, precision, {**env, "XDG_CACHE_HOME": str(cache)}, image
                )
                print(f"{precision} start {index + 1}: {marks}", flush=True)
                starts.append(marks)
            later = starts[1:] or starts
            figures[precision] = {
                key: round(statistics.median(s[key] for s in later), 2) for key in later[0]
            }
            figures[precision]["first_start_first_caption_s"] = round(
                starts[0]["first_caption_s"], 2
            )
        for name, template in (entry.split("=", 1) for entry in args.compare):
            seconds = []
            for index in range(args.starts):
                marks = other_start(template, files, env, image)
                print(f"{name} start {index + 1}: {marks}", flush=True)
                seconds.append(marks["first_caption_s"])
            figures[name] = {
                "command": template,
                "first_caption_s": round(statistics.median(seconds[1:] or seconds), 2),
            }
        figures["imports"] = import_times(args.python, env)
    print(figures)
    write_figures(args.label, figures)


if __name__ == "__main__":
    main()
