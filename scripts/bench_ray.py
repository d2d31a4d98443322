#!/usr/bin/env python3
"""The Ray path against the in-process path on one machine, and the scaling model's inputs.

Writes N 640x480 JPEGs (default 1,000) and a full-size checkpoint of the original layout
with seeded random values (the real weights are not downloadable here; the cost is the
same), then measures, on the same images:

- in process: one engine with every core, the collection path (``pipeline.caption_stream``:
  batches of ``--batch-size`` read and decoded ahead while the engine runs), in a child
  process; images/s from the model loaded to the last
  caption (``inprocess``), and the same with the engine's threads limited to
  ``--cpus-per-actor``, timed from the end of its first batch (``per_actor``: what one
  actor does once the job runs, and the same CPUs as Ray's actors for ``ratio_same_cpus``);
- on Ray: ``run_job`` on a local Ray instance, the folder to Parquet files, end to end
  (Ray's start, the actors' model load, the reads, the writes): images/s and its ratio to
  the in-process figure (the issue's aim: 0.70 or more);
- Ray's fixed cost: the same job on one batch per actor (start, load, one batch), and from
  it Ray's overhead per image: (job - fixed cost) / N - 1 / in-process images/s.

Usage: python scripts/bench_ray.py [--images N] [--batch-size 8] [--actors A]
       [--cpus-per-actor C] [--precision fp32|bf16] [--model-dir DIR]
Run it on a quiet machine: every core is used.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from captioner.config import Settings
from loadkit import cpu_name, full_size_model, write_figures, write_photos


def caption_in_process(
    settings: Settings, paths: list[Path], batch_size: int, steady: bool = False
) -> float:
    """Images/s of one engine over ``paths``, from the model's load to the last caption,
    or with ``steady`` from the end of the first batch (the load and the graphs' first
    call left out: what an actor does once a job runs).

    Runs in a child process: this one stays free of TensorFlow for the Ray driver.
    """
    from captioner.loading import load_engine
    from captioner.pipeline import caption_batches

    started = time.perf_counter()
    engine = load_engine(settings, progress="off")
    done, skip_first = 0, steady
    for batch in caption_batches(engine, paths, batch_size=batch_size):
        if skip_first:  # the clock starts after the first batch
            started, skip_first = time.perf_counter(), False
            continue
        done += len(batch)
    return done / (time.perf_counter() - started)


def in_child(settings: Settings, paths: list[Path], batch_size: int, steady: bool = False) -> float:
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(caption_in_process, settings, paths, batch_size, steady).result()


def ray_job_seconds(
    source: Path, dest: Path, settings: Settings, args: argparse.Namespace
) -> float:
    from captioner.distributed import JobOptions, run_job

    options = JobOptions(
        actors=args.actors, cpus_per_actor=args.cpus_per_actor, batch_size=args.batch_size
    )
    summary = run_job(str(source), str(dest), settings, options)
    assert summary.failed == 0, summary
    return summary.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--cpus-per-actor", type=int, default=1)
    parser.add_argument("--actors", type=int, help="default: the cores less one, per CPU each")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--model-dir", type=Path, help="default: a full-size random model")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    args.actors = args.actors or max(1, (cores - 1) // args.cpus_per_actor)

    with tempfile.TemporaryDirectory(prefix="bench-ray-") as scratch:
        root = Path(scratch)
        model = full_size_model(root / "model", args.model_dir)
        settings = Settings(
            checkpoint=model.checkpoint, vocab=model.vocab, precision=args.precision
        )
        paths = write_photos(root / "images", args.images)
        write_photos(root / "few", args.actors * args.batch_size)

        inprocess = in_child(settings, paths, args.batch_size)
        single = settings.model_copy(
            update={
                "intra_op_threads": args.cpus_per_actor,
                "inter_op_threads": args.cpus_per_actor,
            }
        )
        per_actor = in_child(single, paths[: args.batch_size * 16], args.batch_size, steady=True)
        fixed_s = ray_job_seconds(root / "few", root / "out-few", settings, args)
        job_s = ray_job_seconds(root / "images", root / "out", settings, args)

    ray_ips = args.images / job_s
    overhead_ms = ((job_s - fixed_s) / args.images - 1 / inprocess) * 1000
    print(
        f"CPU: {cpu_name()} ({cores} cores); {args.images} 640x480 JPEGs, {args.precision}, "
        f"batch {args.batch_size}; Ray: {args.actors} actors x {args.cpus_per_actor} CPU"
    )
    print(f"in process:           {inprocess:8.2f} images/s (load included)")
    print(f"Ray, end to end:      {ray_ips:8.2f} images/s ({job_s:.1f} s)")
    print(f"ratio Ray/in process: {ray_ips / inprocess:8.2f} (aim: 0.70 or more)")
    print("scaling model inputs:")
    print(
        f"  per-actor throughput:   {per_actor:8.2f} images/s at {args.cpus_per_actor} CPU "
        f"(in process, steady: after the first batch)"
    )
    print(
        f"ratio Ray/the same CPUs in process: {ray_ips / (args.actors * per_actor):8.2f} "
        f"(Ray's own cost, the job's fixed cost included)"
    )
    print(f"  Ray's fixed cost:       {fixed_s:8.1f} s (start, actors' load, one batch each)")
    print(f"  Ray's overhead/image:   {overhead_ms:8.1f} ms (beyond the in-process time)")
    write_figures(
        args.precision,
        {
            "images": args.images,
            "batch_size": args.batch_size,
            "actors": args.actors,
            "cpus_per_actor": args.cpus_per_actor,
            "inprocess_images_per_s": round(inprocess, 2),
            "ray_images_per_s": round(ray_ips, 2),
            "ray_seconds": round(job_s, 1),
            "ratio": round(ray_ips / inprocess, 2),
            "per_actor_images_per_s": round(per_actor, 2),
            "ratio_same_cpus": round(ray_ips / (args.actors * per_actor), 2),
            "fixed_cost_s": round(fixed_s, 1),
            "overhead_per_image_ms": round(overhead_ms, 1),
        },
    )


if __name__ == "__main__":
    main()
