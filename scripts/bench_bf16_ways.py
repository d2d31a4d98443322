#!/usr/bin/env python3
"""Which way of running the encoder in bfloat16 is fastest here? Two ways against float32.

- ``fp32``: the engine's float32 encoder (``--precision fp32``);
- ``bf16``: the engine's bfloat16 encoder (``--precision bf16``): the folded kernels and
  biases rounded to bfloat16 once at load, the pixels cast once on the way in and the
  features once on the way out, every op in between in bfloat16;
- ``grappler``: the same float32 encoder graph run with TensorFlow's graph rewrite
  ``auto_mixed_precision_onednn_bfloat16`` switched on, which puts casts around the ops it
  chooses, the weights' included, at every call.

(Keras mixed-precision policies do not apply: the encoder is not made of Keras layers, and
a policy keeps float32 variables and casts them at every call too.)

All three run in one process on a full-size checkpoint with seeded random values and the
same random pixels, one call of each in turn (the rewrite is switched on only around the
``grappler`` calls: TensorFlow optimises a graph once per setting), so a neighbour's load
weighs on all three alike. Reported: the median call at batch 1 and at 8, the ratio to
float32, and the features' relative difference to float32.

Usage: python scripts/bench_bf16_ways.py [--calls 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from captioner.testing import write_full_size_checkpoint
from loadkit import cpu_name, write_figures

_REWRITE = "auto_mixed_precision_onednn_bfloat16"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=15, help="timed calls per way and batch")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from captioner.engine import Captioner

    with tempfile.TemporaryDirectory() as tmp:
        files = write_full_size_checkpoint(Path(tmp) / "model")
        fp32 = Captioner.load(files.checkpoint, files.vocab)
        bf16 = Captioner.load(files.checkpoint, files.vocab, precision="bf16")
    # The float32 encoder's ops in a graph of its own, so its optimised form is separate.
    rewritten = tf.function(
        fp32._encoder_ops.encode,
        input_signature=[tf.TensorSpec([None, 299, 299, 3], tf.float32)],
        autograph=False,
    )

    def with_rewrite(pixels: np.ndarray) -> np.ndarray:
        tf.config.optimizer.set_experimental_options({_REWRITE: True})
        try:
            features: np.ndarray = rewritten(pixels).numpy()
            return features
        finally:
            tf.config.optimizer.set_experimental_options({_REWRITE: False})

    ways: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "fp32": fp32.encode,
        "bf16": bf16.encode,
        "grappler": with_rewrite,
    }
    pixels = np.random.default_rng(0).uniform(-1, 1, (8, 299, 299, 3)).astype(np.float32)
    medians: dict[str, dict[int, float]] = {way: {} for way in ways}
    features = {way: encode(pixels) for way, encode in ways.items()}
    for batch in (1, 8):
        times: dict[str, list[float]] = {way: [] for way in ways}
        for encode in ways.values():
            encode(pixels[:batch])
        for _ in range(args.calls):
            for way, encode in ways.items():
                started = time.perf_counter()
                encode(pixels[:batch])
                times[way].append(time.perf_counter() - started)
        for way in ways:
            medians[way][batch] = statistics.median(times[way])

    print(f"CPU: {cpu_name()}, {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    print("| way | batch 1 (ms) | x fp32 | batch 8 (ms) | x fp32 | features vs fp32 |")
    print("|---|---:|---:|---:|---:|---:|")
    results: dict[str, dict[str, float]] = {}
    for way in ways:
        cells = []
        for batch in (1, 8):
            cells += [
                f"{medians[way][batch] * 1000:.1f}",
                f"{medians['fp32'][batch] / medians[way][batch]:.2f}x",
            ]
        reference = features["fp32"]
        error = np.linalg.norm(features[way] - reference) / np.linalg.norm(reference)
        print(f"| {way} | {' | '.join(cells)} | {error:.2%} |")
        results[way] = {
            "batch_1_ms": round(medians[way][1] * 1000, 1),
            "batch_1_x_fp32": round(medians["fp32"][1] / medians[way][1], 2),
            "batch_8_ms": round(medians[way][8] * 1000, 1),
            "batch_8_x_fp32": round(medians["fp32"][8] / medians[way][8], 2),
            "features_vs_fp32_pct": round(100 * float(error), 2),
        }
    write_figures("default", results)


if __name__ == "__main__":
    main()
