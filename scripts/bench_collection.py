#!/usr/bin/env python3
"""How fast does a collection go? ``captioner caption`` over a folder, against the engine.

Writes N 640x480 photo-like JPEGs (default 1,000) and a full-size checkpoint of the original
layout with seeded random values (the real weights are not downloadable here; the cost is
the same), then measures on this machine, in one run:

- the bare float32 encoder at batch 8 on pixels already prepared (the yardstick: what the
  model's largest part alone allows, at the server's batch size), and the same for bf16;
  both also at the collection's batch size (16), for a second, like-for-like ratio;
- the collection path in process, per precision: ``caption_stream`` over the folder at its
  default batch size (listing, reading, decoding the next batch while the engine runs, beam
  search, records), from the first image to the last, the model already loaded; images/s
  and its ratio to the bare float32 encoder at batch 8 and at the same batch size;
- the same folder through ``captioner caption --server`` (the client, its default 16
  requests in flight, JSON Lines written) against a local ``captioner serve`` in float32,
  from the command's start to its end; images/s and its ratio to the bare float32 encoder
  measured again just before each pass (in a child process, the server idle), since the
  machine's speed can drift over a run this long.

Each figure is the median of ``--repeats`` passes, and each ratio the median of the passes'
ratios. Both precisions' engines run in one child process, a pass timing each precision's
encoder and collection in turn, so a ratio never compares figures taken far apart; this
process never loads TensorFlow (the server's memory and cores stay its own).

Usage: python scripts/bench_collection.py [--images N] [--repeats R] [--model-dir DIR]
Run it on a quiet machine: every core is used.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from captioner.pipeline import COLLECTION_BATCH_SIZE
from loadkit import (
    cpu_name,
    free_port,
    full_size_model,
    in_child,
    start_server,
    stop_server,
    write_figures,
    write_photos,
)

# What both children below start with: the engine in each precision asked for (comma-
# separated), a collection batch of prepared images, and a bare encoder's images/s on the
# first ``size`` of them.
_ENCODER_SETUP = """
import json, statistics, sys, time
from pathlib import Path
import numpy as np
from captioner.config import Settings
from captioner.loading import load_engine
from captioner.pipeline import COLLECTION_BATCH_SIZE

checkpoint, vocab, precisions, folder, repeats = sys.argv[1:6]
engines = {
    precision: load_engine(
        Settings(checkpoint=checkpoint, vocab=vocab, precision=precision, offline=True),
        progress="off",
    )
    for precision in precisions.split(",")
}
first = sorted(Path(folder).iterdir())[:COLLECTION_BATCH_SIZE]
pixels = np.stack([engines["fp32"].preprocess(p.read_bytes()) for p in first])
for engine in engines.values():
    engine.warmup([COLLECTION_BATCH_SIZE, 8])

def encoder_rate(precision, size=8):
    started = time.perf_counter()
    for _ in range(5):
        engines[precision].encode(pixels[:size])
    return 5 * size / (time.perf_counter() - started)
"""

# Run in a child: per pass, each precision's bare encoder and collection path in turn, so
# that every ratio compares figures taken minutes apart at most, in one process.
ENGINE_CODE = (
    _ENCODER_SETUP
    + """
from captioner.pipeline import caption_stream
from captioner.sources import iter_sources

passes = []
for _ in range(int(repeats)):
    row = {}
    for precision, engine in engines.items():
        row[precision] = {
            "ran": engine.precision,
            "encoder": encoder_rate(precision),
            "encoder_same_batch": encoder_rate(precision, COLLECTION_BATCH_SIZE),
        }
        started = time.perf_counter()
        done = sum(1 for r in caption_stream(engine, iter_sources([folder])) if r.ok)
        row[precision]["collection"] = done / (time.perf_counter() - started)
    passes.append(row)
print(json.dumps(passes))
"""
)

# Run in a child beside the idle server: the bare fp32 encoder alone, the yardstick of the
# server pass that follows (the machine's speed drifts over a run this long).
ENCODER_CODE = (
    _ENCODER_SETUP + 'print(statistics.median(encoder_rate("fp32") for _ in range(int(repeats))))'
)


def through_server(folder: Path, url: str, out: Path, count: int) -> float:
    """Images/s of ``captioner caption --server`` over ``folder``, command start to end."""
    out.unlink(missing_ok=True)
    command = [
        sys.executable, "-m", "captioner", "caption", str(folder), "--server", url,
        "--output", str(out), "--quiet",
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - started
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == count and all(r["status"] == "ok" for r in records), "lost images"
    return count / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model-dir", type=Path, help="default: a full-size random model")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    with tempfile.TemporaryDirectory(prefix="bench-collection-") as scratch:
        root = Path(scratch)
        model = full_size_model(root / "model", args.model_dir)
        folder = root / "images"
        write_photos(folder, args.images)
        printed = in_child(
            ENGINE_CODE, str(model.checkpoint), str(model.vocab), "fp32,bf16", str(folder),
            str(args.repeats),
        )  # fmt: skip
        engine_passes = json.loads(printed.strip().splitlines()[-1])
        port = free_port()
        server = start_server(model, port, "--precision", "fp32")
        try:
            url = f"http://127.0.0.1:{port}"
            passes = []  # (images/s, the bare encoder's images/s just before)
            for _ in range(args.repeats):
                printed = in_child(
                    ENCODER_CODE, str(model.checkpoint), str(model.vocab), "fp32", str(folder), "3"
                )
                beside = float(printed.strip().splitlines()[-1])
                passes.append(
                    (through_server(folder, url, root / "out.jsonl", args.images), beside)
                )
        finally:
            stop_server(server)

    def median(precision: str, figure: str, per: str | None = None) -> float:
        """The median over the passes of a figure, or of its ratio to fp32's ``per``."""
        return statistics.median(
            float(row[precision][figure]) / (float(row["fp32"][per]) if per else 1.0)
            for row in engine_passes
        )

    batch = COLLECTION_BATCH_SIZE
    print(
        f"CPU: {cpu_name()} ({os.cpu_count()} cores); {args.images} 640x480 JPEGs, in process "
        f"at batch {batch}; the yardstick: the bare fp32 encoder at batch 8 (and at {batch}), "
        f"timed in the same pass"
    )
    figures: dict[str, float | str] = {
        "images": args.images,
        "batch_size": batch,
        "yardstick_batch_size": 8,
        "fp32_encoder_same_batch_images_per_s": round(median("fp32", "encoder_same_batch"), 2),
    }
    for precision in ("fp32", "bf16"):
        ran = str(engine_passes[0][precision]["ran"])
        encoder, collection = median(precision, "encoder"), median(precision, "collection")
        gain = median(precision, "encoder", per="encoder")
        ratio = median(precision, "collection", per="encoder")
        same_batch = median(precision, "collection", per="encoder_same_batch")
        print(
            f"{precision} (ran {ran}): bare encoder {encoder:7.2f} images/s at batch 8 "
            f"({gain:.2f}x fp32's); in process {collection:7.2f} images/s, {ratio:.2f} of the "
            f"fp32 encoder at 8, {same_batch:.2f} of it at {batch}"
        )
        figures[f"{precision}_ran"] = ran
        figures[f"{precision}_encoder_images_per_s"] = round(encoder, 2)
        figures[f"{precision}_encoder_gain"] = round(gain, 2)
        figures[f"{precision}_inprocess_images_per_s"] = round(collection, 2)
        figures[f"{precision}_inprocess_ratio"] = round(ratio, 2)
        figures[f"{precision}_inprocess_ratio_same_batch"] = round(same_batch, 2)
    served = statistics.median(rate for rate, _ in passes)
    beside = statistics.median(encoder for _, encoder in passes)
    ratio = statistics.median(rate / encoder for rate, encoder in passes)
    print(
        f"fp32 through --server: {served:7.2f} images/s, {ratio:.2f} of the bare encoder "
        f"measured before each pass ({beside:.2f} images/s)"
    )
    figures["server_fp32_images_per_s"] = round(served, 2)
    figures["server_fp32_encoder_images_per_s"] = round(beside, 2)
    figures["server_fp32_ratio"] = round(ratio, 2)
    write_figures("default", figures)


if __name__ == "__main__":
    main()
