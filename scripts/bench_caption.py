#!/usr/bin/env python3
"""How long does a caption take? The engine and ``captioner caption --json`` on this machine.

Writes a full-size checkpoint of the original layout with seeded random values (the real
weights are not downloadable here; the cost is the same), then reports medians of:

- the whole command ``captioner caption --json`` for 1 image and for 8 images (a cold
  process: Python and TensorFlow start-up, checkpoint load, graph trace, caption);
- the loaded engine: one image alone, and a batch of 8, with the bare encoder alongside
  (same process, same run), so the share of the beam search is visible.

Usage: python scripts/bench_caption.py [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from checkpoints import write_full_size_checkpoint


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        files = write_full_size_checkpoint(tmp_path / "model")
        rng = np.random.default_rng(0)
        images = []
        for i in range(8):
            path = tmp_path / f"image{i}.jpg"
            Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(path)
            images.append(path)

        command = [
            sys.executable,
            "-m",
            "captioner",
            "caption",
            "--json",
            "--checkpoint",
            str(files.checkpoint),
        ]
        cli_1 = _median_s(
            lambda: subprocess.run([*command, str(images[0])], check=True, capture_output=True), 3
        )
        cli_8 = _median_s(
            lambda: subprocess.run([*command, *map(str, images)], check=True, capture_output=True),
            3,
        )

        from captioner.engine import Captioner

        started = time.perf_counter()
        captioner = Captioner.load(files.checkpoint, files.vocab)
        load_s = time.perf_counter() - started
        data = [p.read_bytes() for p in images]
        pixels = np.stack([captioner.preprocess(d) for d in data])
        captioner.warmup([1, 8])
        captioner.encode(pixels[:1])
        captioner.encode(pixels)
        pre_s = _median_s(lambda: captioner.preprocess(data[0]), args.repeats)
        one_s = _median_s(lambda: captioner.caption_arrays(pixels[:1]), args.repeats)
        eight_s = _median_s(lambda: captioner.caption_arrays(pixels), args.repeats)
        enc1_s = _median_s(lambda: captioner.encode(pixels[:1]), args.repeats)
        enc8_s = _median_s(lambda: captioner.encode(pixels), args.repeats)

    print(f"machine: {os.cpu_count()} CPUs; full-size random checkpoint; medians")
    print(f"captioner caption --json, 1 image (cold process):  {cli_1:6.2f} s")
    print(f"captioner caption --json, 8 images (cold process): {cli_8:6.2f} s")
    print(f"checkpoint load (in process):                      {load_s:6.2f} s")
    print(f"preprocess one 640x480 JPEG:                       {pre_s * 1000:6.1f} ms")
    print(f"caption 1 image (encoder + beam search):           {one_s * 1000:6.1f} ms")
    print(f"  bare encoder, 1 image:                           {enc1_s * 1000:6.1f} ms")
    print(
        f"caption batch of 8:                                {eight_s * 1000:6.1f} ms"
        f"  ({eight_s / 8 * 1000:.1f} ms/image, {8 / eight_s:.1f} images/s)"
    )
    print(
        f"  bare encoder, batch of 8:                        {enc8_s * 1000:6.1f} ms"
        f"  ({8 / enc8_s:.1f} images/s)"
    )


if __name__ == "__main__":
    main()
