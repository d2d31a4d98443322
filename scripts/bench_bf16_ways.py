#!/usr/bin/env python3
"""Which way of running the encoder in bfloat16 is fastest here? Two ways against float32.

- ``fp32``: the engine's float32 encoder (``--precision fp32``);
- ``bf16``: the engine's bfloat16 encoder (``--precision bf16``): the folded kernels and
  biases rounded to bfloat16 once at load, the pixels cast once on the way in and the
  features once on the way out, every op in between in bfloat16;
- ``grappler``: the float32 encoder with TensorFlow's graph rewrite
  ``auto_mixed_precision_onednn_bfloat16`` switched on, which puts casts around the ops it
  chooses, the weights' included, at every call.

(Keras mixed-precision policies do not apply: the encoder is not made of Keras layers, and
a policy keeps float32 variables and casts them at every call too.)

Each way runs in its own process (the rewrite is a process-wide switch), ``--rounds`` times
in turn, on a full-size checkpoint with seeded random values and the same random pixels;
each process reports its fastest call at batch 1 and at 8, and the figures are the median
over the rounds, with the features' relative difference to float32.

Usage: python scripts/bench_bf16_ways.py [--rounds 3] [--calls 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

_CHILD = """
import json, sys, time
import numpy as np
way, checkpoint, vocab, calls, out = sys.argv[1:6]
import tensorflow as tf
if way == "grappler":
    tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": True})
from captioner.engine import Captioner
captioner = Captioner.load(checkpoint, vocab, precision="bf16" if way == "bf16" else "fp32")
pixels = np.random.default_rng(0).uniform(-1, 1, (8, 299, 299, 3)).astype(np.float32)
best = {}
for batch in (1, 8):
    captioner.encode(pixels[:batch])
    times = []
    for _ in range(int(calls)):
        started = time.perf_counter()
        features = captioner.encode(pixels[:batch])
        times.append(time.perf_counter() - started)
    best[batch] = min(times)
np.save(out, features)
print(json.dumps(best))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=7, help="timed calls per batch size")
    args = parser.parse_args()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    ways = ("fp32", "bf16", "grappler")
    times: dict[str, dict[int, list[float]]] = {way: {1: [], 8: []} for way in ways}
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model"
        write = (
            "import sys; sys.path.insert(0, sys.argv[2]); "
            "from checkpoints import write_full_size_checkpoint; "
            "write_full_size_checkpoint(__import__('pathlib').Path(sys.argv[1]))"
        )
        subprocess.run(
            [sys.executable, "-c", write, str(model), str(REPO / "tests")], env=env, check=True
        )
        checkpoint, vocab = model / "checkpoint", model / "word_counts.txt"
        for round_ in range(args.rounds):
            for way in ways:
                out = Path(tmp) / f"{way}.npy"
                child = [way, str(checkpoint), str(vocab), str(args.calls), str(out)]
                result = subprocess.run(
                    [sys.executable, "-c", _CHILD, *child],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                best = json.loads(result.stdout.splitlines()[-1])
                for batch in (1, 8):
                    times[way][batch].append(best[str(batch)])
                print(f"round {round_ + 1}, {way}: {best}", flush=True)
        features = {way: np.load(Path(tmp) / f"{way}.npy") for way in ways}

    print()
    print(f"CPU: {_cpu_model()}, {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    print("| way | batch 1 (ms) | x fp32 | batch 8 (ms) | x fp32 | features vs fp32 |")
    print("|---|---:|---:|---:|---:|---:|")
    reference = {batch: statistics.median(times["fp32"][batch]) for batch in (1, 8)}
    for way in ways:
        cells = []
        for batch in (1, 8):
            median = statistics.median(times[way][batch])
            cells += [f"{median * 1000:.1f}", f"{reference[batch] / median:.2f}x"]
        error = np.linalg.norm(features[way] - features["fp32"]) / np.linalg.norm(features["fp32"])
        print(f"| {way} | {' | '.join(cells)} | {error:.2%} |")


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return "unknown CPU"


if __name__ == "__main__":
    main()
