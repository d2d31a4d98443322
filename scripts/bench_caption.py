#!/usr/bin/env python3
"""How long does a caption take? The engine and ``captioner caption --json`` on this machine.

Writes a full-size checkpoint of the original layout with seeded random values (the real
weights are not downloadable here; the cost is the same), then reports medians of, for
each ``--precision``:

- the whole command ``captioner caption --json`` for 1 image and for 8 images (a cold
  process: Python and TensorFlow start-up, checkpoint load, graph trace, caption);
- the loaded engine: one image alone, and a batch of 8, with the bare encoder alongside
  (same process, same run), so the share of the beam search is visible; throughputs are
  also given as a ratio to the bare float32 encoder's at batch 8;
- full batches of 8 back to back, one after the other and as a two-stage pipeline (the
  encoder of the next batch in one thread while the beam search of the last runs in
  another), alternately for ``--pipeline-seconds`` each, three times: what overlapping the
  stages could give a server whose queue always holds the next batch.

Usage: python scripts/bench_caption.py [--repeats N] [--precision fp32 bf16]
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from captioner.testing import write_full_size_checkpoint
from loadkit import cpu_name, median_time_s, write_figures


def _quiet(command: list[str]) -> None:
    """Run ``command``, its output kept (a failure raises with it)."""
    subprocess.run(command, check=True, capture_output=True)


def measure_engine(captioner: Any, data: list[bytes], repeats: int) -> dict[str, Any]:
    """Medians of preprocessing, the engine and the bare encoder at 1 and 8 images.

    One call of each in turn per round, so a neighbour's load that comes and goes weighs
    on all of them alike.
    """
    pixels = np.stack([captioner.preprocess(d) for d in data])
    captioner.warmup([8, 1])
    calls: dict[str, Callable[[], object]] = {
        "pre": lambda: captioner.preprocess(data[0]),
        "one": lambda: captioner.caption_arrays(pixels[:1]),
        "eight": lambda: captioner.caption_arrays(pixels),
        "enc1": lambda: captioner.encode(pixels[:1]),
        "enc8": lambda: captioner.encode(pixels),
    }
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - started)
    return {"ran": captioner.precision, **{k: statistics.median(v) for k, v in times.items()}}


def pipeline_gain(captioner: Any, pixels: np.ndarray, seconds: float) -> float:
    """Median ratio of full batches per second, pipelined over one after the other."""

    def sequential() -> float:
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            captioner.caption_arrays(pixels)
            count += 1
        return count / (time.perf_counter() - started)

    def pipelined() -> float:
        handoff: queue.Queue[Any] = queue.Queue(maxsize=1)
        stop_at, count = time.perf_counter() + seconds, 0

        def encode() -> None:
            while time.perf_counter() < stop_at:
                handoff.put(captioner.encode(pixels))
            handoff.put(None)

        started = time.perf_counter()
        encoder = threading.Thread(target=encode)
        encoder.start()
        while (features := handoff.get()) is not None:
            captioner.search(features)
            count += 1
        encoder.join()
        return count / (time.perf_counter() - started)

    return statistics.median(pipelined() / sequential() for _ in range(3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--precision", nargs="+", choices=["fp32", "bf16", "auto"], default=["fp32", "bf16"]
    )
    parser.add_argument("--pipeline-seconds", type=float, default=6.0)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    precisions = list(dict.fromkeys(["fp32", *args.precision]))

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        files = write_full_size_checkpoint(tmp_path / "model")
        rng = np.random.default_rng(0)
        images = []
        for i in range(8):
            path = tmp_path / f"image{i}.jpg"
            Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(path)
            images.append(path)

        cold: dict[str, tuple[float, float]] = {}
        for precision in precisions:
            command = [
                sys.executable, "-m", "captioner", "caption", "--json",
                "--checkpoint", str(files.checkpoint), "--precision", precision,
            ]  # fmt: skip
            one = median_time_s(partial(_quiet, [*command, str(images[0])]), 3)
            eight = median_time_s(partial(_quiet, [*command, *map(str, images)]), 3)
            cold[precision] = (one, eight)

        from captioner.engine import Captioner

        rows = {}
        data = [p.read_bytes() for p in images]
        for precision in precisions:
            started = time.perf_counter()
            captioner = Captioner.load(files.checkpoint, files.vocab, precision=precision)
            rows[precision] = {
                "load": time.perf_counter() - started,
                **measure_engine(captioner, data, args.repeats),
            }
            pixels = np.stack([captioner.preprocess(d) for d in data])
            rows[precision]["pipeline"] = pipeline_gain(captioner, pixels, args.pipeline_seconds)
            del captioner

    reference = 8 / rows["fp32"]["enc8"]
    print(f"CPU: {cpu_name()}, {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    print("full-size random checkpoint; medians; ratios to the bare fp32 encoder at batch 8")
    for precision in precisions:
        row, (cli_1, cli_8) = rows[precision], cold[precision]
        print(f"--- {precision} (runs {row['ran']}; load with calibration {row['load']:.2f} s)")
        print(f"captioner caption --json, 1 image (cold process):  {cli_1:6.2f} s")
        print(f"captioner caption --json, 8 images (cold process): {cli_8:6.2f} s")
        print(f"preprocess one 640x480 JPEG:                       {row['pre'] * 1000:6.1f} ms")
        print(f"caption 1 image (encoder + beam search):           {row['one'] * 1000:6.1f} ms")
        print(f"  bare encoder, 1 image:                           {row['enc1'] * 1000:6.1f} ms")
        print(
            f"caption batch of 8:                                {row['eight'] * 1000:6.1f} ms"
            f"  ({8 / row['eight']:.1f} images/s, {8 / row['eight'] / reference:.2f}x)"
        )
        print(
            f"  bare encoder, batch of 8:                        {row['enc8'] * 1000:6.1f} ms"
            f"  ({8 / row['enc8']:.1f} images/s, {8 / row['enc8'] / reference:.2f}x)"
        )
        print(f"full batches pipelined / one after the other:      {row['pipeline']:6.2f}x")
    write_figures("-".join(precisions), figures(rows, cold, reference))


def figures(
    rows: dict[str, dict[str, Any]], cold: dict[str, tuple[float, float]], reference: float
) -> dict[str, Any]:
    """What ``main`` printed, per precision, for the figures file (times in ms or s)."""
    out: dict[str, Any] = {}
    for precision, row in rows.items():
        out[precision] = {
            "ran": row["ran"],
            "cold_1_image_s": round(cold[precision][0], 2),
            "cold_8_images_s": round(cold[precision][1], 2),
            "load_s": round(row["load"], 2),
            "preprocess_ms": round(row["pre"] * 1000, 1),
            "caption_1_ms": round(row["one"] * 1000, 1),
            "encoder_1_ms": round(row["enc1"] * 1000, 1),
            "caption_8_ms": round(row["eight"] * 1000, 1),
            "caption_8_images_s": round(8 / row["eight"], 1),
            "caption_8_x_bare_fp32_encoder": round(8 / row["eight"] / reference, 2),
            "encoder_8_ms": round(row["enc8"] * 1000, 1),
            "encoder_8_images_s": round(8 / row["enc8"], 1),
            "encoder_8_x_bare_fp32_encoder": round(8 / row["enc8"] / reference, 2),
            "pipelined_x_sequential": round(row["pipeline"], 2),
        }
    return out


if __name__ == "__main__":
    main()
