#!/usr/bin/env python3
"""How fast is ``captioner serve``? Throughput and latency under load, against the encoder.

Writes a full-size checkpoint of the original layout with seeded random values (the real
weights are not downloadable here), or takes ``--model-dir`` (the pretrained model once
``captioner download`` has fetched it), then, in one run:

1. the bare Inception encoder (the engine's own encoder graph), loaded in this process, at
   batch sizes 1..16, in float32 and in each other ``--precision`` asked for, the
   precisions in turn at each size: the batch size where float32 runs fastest, and the
   bare encoder's own bf16/fp32 ratio (what bfloat16 can give on this CPU); plus one image
   and a batch of 8 through the whole engine (encoder + beam search), per precision;
2. ``captioner serve --precision P`` as a subprocess for each precision, batching on
   (``--max-batch-size 8``) and, with ``--batching on off``, off (``--max-batch-size 1``),
   each at concurrency 1, 8 and 32 for ``--duration`` seconds of closed-loop load (each
   client sends its next request when the last one is answered): throughput (as a ratio
   to the bare float32 encoder), p50 and p95 latency, and resident memory (above what
   ``scripts/deploy_footprint.py`` reports: this process maps TensorFlow too, and the
   server cannot release library pages another process maps).

``--load wrk`` drives the servers with ``wrk`` (Debian's ``apt-get install wrk``, a C load
generator: it takes little of the cores the server needs, where the default Python client
takes a share of them) through a Lua script that posts the same multipart upload; its
latencies are wrk's. Either way each row is also given as a ratio to the in-process engine
(preprocessed pixels in, captions out: what the server could reach if its own work around
the engine cost nothing) at the batch size the server runs at that load: one image at 1
client, a batch of 8 at 8 and 32.

``--label`` names the run in the figures file (``before``: run with ``PYTHONPATH`` set to
another checkout's ``src``, it measures that code, the in-process engine included).

``--profile`` runs each server under ``cProfile`` and, after its load levels, prints where
the event loop's CPU went per request (HTTP parsing, multipart, routing and middleware,
response, the rest), beside decoding and resizing one image timed in this process: the
Python work around the engine. cProfile slows what it profiles, so its figures are for
shares, not for the throughput of the same run.

The servers run one at a time, and the bare float32 encoder (at its best batch size) is
measured again just before each server starts and just after it stops: each server's
figures are divided by the mean of those two, so a machine whose other load comes and goes
during the run still compares like with like.

Random weights cost the encoder what the real ones cost, and are the beam search's worst
case: their captions never end, so every image runs all ``max_length - 1`` steps, where a
trained model's captions end and the search stops early. ``--model-dir`` and ``--image``
measure real weights on a real photo instead.

Usage: python scripts/bench_server.py [--precision fp32 bf16] [--batching on off]
                                      [--duration 25] [--concurrency 1 8 32]
                                      [--load python|wrk] [--profile] [--label NAME]
                                      [--model-dir DIR] [--image FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import pstats
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from captioner.assets import model_files_in
from captioner.testing import write_full_size_checkpoint
from loadkit import (
    cpu_name,
    free_port,
    median_time_s,
    memory_mib,
    percentile,
    photo_jpeg,
    start_server,
    stop_server,
    write_figures,
)


@dataclass(frozen=True)
class LoadResult:
    requests: int
    errors: int
    throughput: float  # answered requests per second
    elapsed_s: float  # until the last answer (the last requests end after the deadline)
    p50_ms: float
    p95_ms: float


def encoder_throughput(captioner: Any, pixels: np.ndarray, batch: int, seconds: float) -> float:
    """Images per second through the bare encoder at one batch size (after one warm call)."""
    stack = np.stack([pixels] * batch)
    captioner.encode(stack)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        captioner.encode(stack)
        count += batch
    return count / (time.perf_counter() - started)


def bench_encoders(
    captioners: dict[str, Any], pixels: np.ndarray, seconds: float
) -> dict[str, dict[int, float]]:
    """Bare encoder images/s per precision and batch size, the precisions in turn per size."""
    results: dict[str, dict[int, float]] = {precision: {} for precision in captioners}
    for batch in (1, 2, 4, 8, 16):
        for precision, captioner in captioners.items():
            rate = encoder_throughput(captioner, pixels, batch, seconds)
            results[precision][batch] = rate
            print(f"  bare encoder, {precision}, batch {batch:2d}: {rate:.2f} images/s", flush=True)
    return results


def bench_engine(captioner: Any, pixels: np.ndarray) -> dict[str, float]:
    """Milliseconds for one image through the encoder and the whole engine, and a batch of 8
    through the whole engine (medians)."""
    one, eight = pixels[None], np.stack([pixels] * 8)
    captioner.caption_arrays(one)
    captioner.caption_arrays(eight)
    return {
        "encoder_1_ms": median_time_s(lambda: captioner.encode(one), 7) * 1000,
        "engine_1_ms": median_time_s(lambda: captioner.caption_arrays(one), 7) * 1000,
        "engine_8_ms": median_time_s(lambda: captioner.caption_arrays(eight), 5) * 1000,
    }


def engine_counters(port: int) -> dict[str, float]:
    """The server's batch and inference counters, from its /metrics."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    wanted = (
        "captioner_batch_size_count",
        "captioner_batch_size_sum",
        "captioner_inference_seconds_sum",
    )
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            values[name] = float(value)
    return values


def event_loop_cpu_s(pid: int) -> float:
    """CPU seconds the server's main thread (its event loop: HTTP, multipart, routing,
    responses) has used: its user and system ticks in ``/proc`` (Linux)."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def closed_loop(url: str, image: bytes, concurrency: int, seconds: float) -> LoadResult:
    """``concurrency`` clients, each posting its next image when the last is answered."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def one_client() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                files = {"image": ("photo.jpg", image, "image/jpeg")}
                response = await client.post(url, files=files)
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return LoadResult(
        len(latencies),
        errors,
        len(latencies) / elapsed,
        elapsed,
        percentile(latencies, 0.5) * 1000,
        percentile(latencies, 0.95) * 1000,
    )


_WRK_SCRIPT = """
local file = io.open(os.getenv("BENCH_BODY"), "rb")
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "multipart/form-data; boundary=bench-boundary"

function done(summary, latency, requests)
  io.write(string.format("bench requests %d non2xx %d duration_us %d p50_us %d p95_us %d\\n",
    summary.requests, summary.errors.status, summary.duration,
    latency:percentile(50), latency:percentile(95)))
end
"""


def wrk_load(url: str, image: bytes, concurrency: int, seconds: float) -> LoadResult:
    """``concurrency`` wrk connections (one thread) posting the image for ``seconds``."""
    body = (
        b"--bench-boundary\r\n"
        b'Content-Disposition: form-data; name="image"; filename="photo.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + image + b"\r\n--bench-boundary--\r\n"
    )
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "body").write_bytes(body)
        (Path(scratch) / "post.lua").write_text(_WRK_SCRIPT)
        done = subprocess.run(
            ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--timeout", "120s",
             "-s", str(Path(scratch) / "post.lua"), url],
            env={**os.environ, "BENCH_BODY": str(Path(scratch) / "body")},
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    line = next(line for line in done.stdout.splitlines() if line.startswith("bench "))
    values = dict(zip(line.split()[1::2], map(int, line.split()[2::2]), strict=True))
    answered = values["requests"] - values["non2xx"]
    elapsed = values["duration_us"] / 1e6
    return LoadResult(
        answered,
        values["non2xx"],
        answered / elapsed,
        elapsed,
        values["p50_us"] / 1000,
        values["p95_us"] / 1000,
    )


@dataclass(frozen=True)
class Row:
    precision: str
    label: str
    concurrency: int
    reference: float  # the bare fp32 encoder's images/s around this server's run
    engine: float  # the in-process engine's images/s at this load's batch size, around it
    load: LoadResult
    mean_batch: float  # requests per engine call
    engine_busy: float  # share of the time the engine was running a batch
    event_loop_cpu_ms: float  # the server's main thread's CPU per request (no profiler)
    rss_mib: float
    peak_rss_mib: float

    def __str__(self) -> str:
        return (
            f"{self.load.throughput:.2f} req/s, p50 {self.load.p50_ms:.0f} ms, "
            f"p95 {self.load.p95_ms:.0f} ms, errors {self.load.errors}, "
            f"mean batch {self.mean_batch:.1f}, engine busy {100 * self.engine_busy:.0f}%, "
            f"event loop {self.event_loop_cpu_ms:.2f} ms CPU/request, "
            f"RSS {self.rss_mib:.0f} MiB (peak {self.peak_rss_mib:.0f})"
        )


def measure(
    precision: str,
    label: str,
    reference: float,
    process: subprocess.Popen[bytes],
    port: int,
    image: bytes,
    concurrency: int,
    seconds: float,
    use_wrk: bool,
) -> Row:
    """One load level against a running server, with its batch and memory figures."""
    url = f"http://127.0.0.1:{port}/model/predict"
    before = engine_counters(port)
    loop_before = event_loop_cpu_s(process.pid)
    if use_wrk:
        load = wrk_load(url, image, concurrency, seconds)
    else:
        load = asyncio.run(closed_loop(url, image, concurrency, seconds))
    loop_cpu_s = event_loop_cpu_s(process.pid) - loop_before
    after = engine_counters(port)
    delta = {name: after[name] - before[name] for name in after}
    batches = delta["captioner_batch_size_count"]
    images = delta["captioner_batch_size_sum"]
    rss, peak = memory_mib(process.pid)
    return Row(
        precision=precision,
        label=label,
        concurrency=concurrency,
        reference=reference,
        engine=0.0,
        load=load,
        mean_batch=images / batches if batches else float("nan"),
        engine_busy=delta["captioner_inference_seconds_sum"] / load.elapsed_s,
        event_loop_cpu_ms=1000 * loop_cpu_s / max(load.requests + load.errors, 1),
        rss_mib=rss,
        peak_rss_mib=peak,
    )


# ``captioner serve`` with a profiler of its main thread (the event loop), on from SIGUSR1
# to SIGUSR2, which writes its statistics to the file named first.
_PROFILED_SERVER = """
import cProfile, signal, sys
from captioner.cli import main

profile, path = cProfile.Profile(), sys.argv[1]
signal.signal(signal.SIGUSR1, lambda *_: profile.enable())

def dump(*_):
    profile.disable()
    profile.dump_stats(path + ".part")
    __import__("os").replace(path + ".part", path)

signal.signal(signal.SIGUSR2, dump)
sys.argv = ["captioner", *sys.argv[2:]]
main()
"""

# Where a profiled function's time is counted: by the first part of its file's path that
# matches. The event loop's waits for news (its selector's poll) are idle time, not work.
_PROFILE_PARTS = [
    ("HTTP parsing", ("/h11/", "uvicorn/protocols/", "captioner/api/protocol")),
    ("multipart", ("/multipart/", "python_multipart", "starlette/formparsers", "api/uploads")),
    ("response", ("/pydantic", "starlette/responses", "fastapi/encoders", "/json/")),
    ("routing and middleware", ("/starlette/", "/fastapi/", "captioner/api/")),
    ("batching", ("captioner/batching", "/numpy/")),
    ("event loop and sockets", ("asyncio/", "selectors", "_socket", "select.", "/anyio/")),
    ("the rest", ("",)),
]


def event_loop_profile(path: Path, requests: int) -> dict[str, float]:
    """Milliseconds of the event loop's own CPU per request, by part, from cProfile's
    statistics (the main thread only: decoding and the engine run on other threads)."""
    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    totals = dict.fromkeys((part for part, _ in _PROFILE_PARTS), 0.0)
    largest = []
    for (filename, line, function), (_, _, own_s, _, _) in stats.items():
        if "poll' of 'select" in function:
            continue
        for part, markers in _PROFILE_PARTS:
            if any(marker in f"{filename} {function}" for marker in markers):
                totals[part] += own_s
                largest.append((own_s, part, f"{function} ({filename}:{line})"))
                break
    for own_s, part, where in sorted(largest, reverse=True)[:12]:
        print(f"    {1000 * own_s / max(requests, 1):7.3f} ms/request  {part:24}  {where}")
    return {part: round(1000 * seconds / max(requests, 1), 3) for part, seconds in totals.items()}


def preprocessing_ms(captioner: Any, image: bytes) -> dict[str, float]:
    """Median milliseconds of decoding the JPEG and of resizing it, in this process."""
    from captioner import preprocessing

    pixels = preprocessing.decode_image(image, max_pixels=captioner.max_image_pixels)
    return {
        "decode": round(1000 * median_time_s(lambda: preprocessing.decode_image(
            image, max_pixels=captioner.max_image_pixels), 51), 2),
        "resize_and_crop": round(1000 * median_time_s(
            lambda: preprocessing._scale_resize_crop(pixels), 51), 2),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--precision",
        nargs="+",
        choices=["fp32", "bf16", "auto"],
        default=["fp32"],
        help="serve in each of these (the bare float32 encoder is always measured)",
    )
    parser.add_argument(
        "--batching", nargs="+", choices=["on", "off"], default=["on", "off"], help="max 8 / 1"
    )
    parser.add_argument("--duration", type=float, default=25.0, help="seconds per load level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--encoder-seconds", type=float, default=6.0)
    parser.add_argument(
        "--model-dir", type=Path, help="serve this model directory instead of random weights"
    )
    parser.add_argument("--image", type=Path, help="post this image instead of a synthetic one")
    parser.add_argument(
        "--load", choices=["python", "wrk"], default="python", help="the load generator"
    )
    parser.add_argument(
        "--profile", action="store_true", help="profile each server's event loop (cProfile)"
    )
    parser.add_argument("--label", help="added to the run's name in the figures file")
    args = parser.parse_args()
    if args.load == "wrk" and not shutil.which("wrk"):
        parser.error("--load wrk needs wrk on the PATH (apt-get install wrk)")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    image = args.image.read_bytes() if args.image else photo_jpeg(640, 480, noise=12, quality=90)

    with tempfile.TemporaryDirectory() as tmp:
        if args.model_dir:
            files = model_files_in(args.model_dir)
        else:
            print("writing the full-size random checkpoint ...", flush=True)
            files = write_full_size_checkpoint(Path(tmp) / "model")
        from captioner.engine import Captioner

        captioners: dict[str, Any] = {}
        for precision in dict.fromkeys(["fp32", *args.precision]):
            captioner = Captioner.load(files.checkpoint, files.vocab, precision=precision)
            if captioner.precision != precision:
                print(f"({precision} runs {captioner.precision} on this machine)")
            captioners[precision] = captioner
        pixels = captioners["fp32"].preprocess(image)
        print("bare encoders in this process:", flush=True)
        encoders = bench_encoders(captioners, pixels, args.encoder_seconds)
        engines = {p: bench_engine(c, pixels) for p, c in captioners.items()}
        best_batch = max(encoders["fp32"], key=lambda batch: encoders["fp32"][batch])

        def reference() -> float:
            rate = encoder_throughput(captioners["fp32"], pixels, best_batch, args.encoder_seconds)
            print(f"  bare fp32 encoder, batch {best_batch}: {rate:.2f} images/s", flush=True)
            return rate

        rows = []
        references = []
        profiles: dict[str, dict[str, float]] = {}
        batchings = [("on (max 8)", 8) if b == "on" else ("off (max 1)", 1) for b in args.batching]
        for precision in args.precision:
            for label, max_batch in batchings:
                before = reference()
                engine_before = bench_engine(captioners[precision], pixels)
                port = free_port()
                print(f"server, {precision}, batching {label}: starting ...", flush=True)
                profile = Path(tmp) / f"profile-{precision}-{max_batch}"
                process = start_server(
                    files,
                    port,
                    "--max-batch-size",
                    str(max_batch),
                    "--precision",
                    precision,
                    "--max-queue-size",
                    "128",
                    launcher=(
                        ("-c", _PROFILED_SERVER, str(profile))
                        if args.profile
                        else ("-m", "captioner")
                    ),
                )
                try:
                    # Warm-up, unmeasured: first requests, allocator growth.
                    asyncio.run(
                        closed_loop(f"http://127.0.0.1:{port}/model/predict", image, 8, 3.0)
                    )
                    if args.profile:
                        process.send_signal(signal.SIGUSR1)  # the measured loads only
                    results = [
                        measure(
                            precision,
                            label,
                            0.0,
                            process,
                            port,
                            image,
                            c,
                            args.duration,
                            args.load == "wrk",
                        )
                        for c in args.concurrency
                    ]
                    if args.profile:
                        process.send_signal(signal.SIGUSR2)
                        while not profile.exists():
                            time.sleep(0.1)
                finally:
                    stop_server(process)
                around = (before + reference()) / 2
                engine_after = bench_engine(captioners[precision], pixels)
                references.append(around)
                for row in results:
                    batch = min(row.concurrency, max_batch)
                    key = "engine_1_ms" if batch == 1 else "engine_8_ms"
                    per_image_ms = (engine_before[key] + engine_after[key]) / 2 / batch
                    row = dataclasses.replace(row, reference=around, engine=1000 / per_image_ms)
                    rows.append(row)
                    print(f"  c={row.concurrency:2d}: {row}", flush=True)
                if args.profile:
                    requests = sum(row.load.requests + row.load.errors for row in results)
                    profiles[f"{precision}, batching {label}"] = event_loop_profile(
                        profile, requests
                    )

    print()
    print(f"CPU: {cpu_name()}, {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    best = encoders["fp32"][best_batch]
    print(
        f"Bare fp32 encoder: best at batch {best_batch}, {best:.2f} images/s in the sweep; "
        f"around the servers {', '.join(f'{r:.2f}' for r in references)}"
    )
    for precision in captioners:
        batch = max(encoders[precision], key=lambda b: encoders[precision][b])
        top = encoders[precision][batch]
        same = encoders[precision][best_batch] / encoders["fp32"][best_batch]
        engine = engines[precision]
        print(
            f"  {precision}: bare encoder best {top:.2f} images/s (batch {batch}); "
            f"at batch {best_batch} {same:.2f}x the fp32 encoder; engine: one image "
            f"{engine['engine_1_ms']:.0f} ms (encoder {engine['encoder_1_ms']:.0f}), batch "
            f"of 8 {engine['engine_8_ms']:.0f} ms = {8000 / engine['engine_8_ms'] / best:.2f}x"
        )
    print()
    print(
        "| precision | batching | clients | throughput (req/s) | x bare fp32 encoder "
        "| x engine | p50 (ms) | p95 (ms) | mean batch | engine busy | errors | RSS (MiB) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        load = row.load
        print(
            f"| {row.precision} | {row.label} | {row.concurrency} | {load.throughput:.2f} | "
            f"{load.throughput / row.reference:.2f}x | {load.throughput / row.engine:.2f} | "
            f"{load.p50_ms:.0f} | {load.p95_ms:.0f} | "
            f"{row.mean_batch:.1f} | {100 * row.engine_busy:.0f}% | "
            f"{load.errors} | {row.rss_mib:.0f} (peak {row.peak_rss_mib:.0f}) |"
        )
    preprocessing = preprocessing_ms(captioners["fp32"], image)
    print(f"preprocessing one image in this process: {preprocessing}")
    for name, shares in profiles.items():
        print(f"event loop per request ({name}, cProfile): {shares}")
    run = "-".join(args.precision) + "_batching-" + "-".join(args.batching)
    if args.load == "wrk":
        run += "_wrk"
    if args.profile:
        run += "_profile"
    if args.label:
        run += f"_{args.label}"
    if args.model_dir or args.image:
        run += "_given-model-or-image"
    result = figures(encoders, best_batch, references, engines, rows)
    result["preprocessing_ms"] = preprocessing
    if profiles:
        result["event_loop_ms_per_request"] = profiles
    write_figures(run, result)


def figures(
    encoders: dict[str, dict[int, float]],
    best_batch: int,
    references: list[float],
    engines: dict[str, dict[str, float]],
    rows: list[Row],
) -> dict[str, Any]:
    """What ``main`` printed, for the figures file: per precision the bare encoder's
    images/s by batch size and the engine's times, per server and load level its row."""
    best = encoders["fp32"][best_batch]
    servers: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for row in rows:
        batching = "on" if row.label.startswith("on") else "off"
        servers.setdefault(row.precision, {}).setdefault(batching, {})[str(row.concurrency)] = {
            "throughput_rps": round(row.load.throughput, 2),
            "x_bare_fp32_encoder": round(row.load.throughput / row.reference, 2),
            "engine_images_s": round(row.engine, 2),
            "x_engine": round(row.load.throughput / row.engine, 2),
            "p50_ms": round(row.load.p50_ms, 1),
            "p95_ms": round(row.load.p95_ms, 1),
            "mean_batch": round(row.mean_batch, 2),
            "engine_busy_pct": round(100 * row.engine_busy, 1),
            "event_loop_cpu_ms_per_request": round(row.event_loop_cpu_ms, 2),
            "errors": row.load.errors,
            "rss_mib": round(row.rss_mib, 1),
            "peak_rss_mib": round(row.peak_rss_mib, 1),
        }
    return {
        "best_batch": best_batch,
        "reference_images_s": [round(r, 2) for r in references],
        "encoders": {
            precision: {
                "images_s": {str(b): round(rate, 2) for b, rate in by_batch.items()},
                "x_fp32_at_best_batch": round(
                    by_batch[best_batch] / encoders["fp32"][best_batch], 2
                ),
            }
            for precision, by_batch in encoders.items()
        },
        "engines": {
            precision: {
                **{key: round(value, 1) for key, value in engine.items()},
                "engine_8_x_bare_fp32_encoder": round(8000 / engine["engine_8_ms"] / best, 2),
            }
            for precision, engine in engines.items()
        },
        "servers": servers,
    }


if __name__ == "__main__":
    main()
