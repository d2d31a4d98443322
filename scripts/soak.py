#!/usr/bin/env python3
"""Does the server hold up over thousands of mixed requests? A soak, in phases.

Starts ``captioner serve`` on a full-size checkpoint of the original layout with seeded
random values (or ``--model-dir``) and sends some thousands of requests in phases of
changing concurrency (closed loop: each client sends its next request when the last is
answered). The requests are a fixed, seeded mix:

- good: one photo-like JPEG or PNG (640x480, varied) to ``/model/predict``;
- batch: 2 to 4 photos, one of them sometimes broken, to ``/model/predict/batch``;
- bad image: garbage, empty, truncated, or a PDF, to ``/model/predict`` (400);
- bad parameter: ``beam_size=0`` or ``max_length=999`` (400);
- pixel bomb: a PNG declaring 100000x100000 pixels (413, from the header);
- too large: a body over the upload limit (413, before it is read).

It reports, per phase, each kind's answers (and whether each was the expected one), the
p50 and p99 latency of the good and batch requests, and the resident memory at the
phase's end; overall, the memory at the start (after a warm-up), the peak (VmHWM) and at
the end (after ``--settle`` seconds). Random weights are the beam search's worst case
(their captions never end early), so latencies are upper bounds.

The phase plan runs ``--rounds`` times on the same server: memory that grows in every
round is a leak; memory that grows in the first round only is a working set being built
(TensorFlow's kernels and buffers for each batch size, the allocator's heaps).

Usage: python scripts/soak.py [--scale 1.0] [--rounds 2] [--settle 10] [--model-dir DIR]
                              [--seed 0] [-- extra captioner serve options]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import io
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from captioner.testing import png_declaring
from loadkit import (
    cpu_name,
    free_port,
    full_size_model,
    memory_mib,
    percentile,
    photo_jpeg,
    reset_peak,
    start_server,
    stop_server,
    write_figures,
)

# (concurrency, requests): up, down, up again, idle-ish at the end.
PHASES = ((1, 150), (8, 600), (32, 1000), (4, 300), (16, 800), (1, 150))
# kind -> (share of requests, the statuses that are right for it)
KINDS = {
    "good": (0.58, {200}),
    "batch": (0.15, {200}),
    "bad_image": (0.12, {400}),
    "bad_parameter": (0.07, {400}),
    "pixel_bomb": (0.05, {413}),
    "too_large": (0.03, {413}),
}


@dataclass
class Outcome:
    kind: str
    status: str  # the HTTP status, or the transport error's name
    latency_s: float
    batch_errors: int = 0  # for batches: files answered with their own error


Phase = tuple[int, int, list[Outcome], float, float]  # number, clients, outcomes, s, MiB


@dataclass
class Corpus:
    """Every body the soak sends, built once (seeded)."""

    photos: list[tuple[str, bytes, str]] = field(default_factory=list)
    bad: list[bytes] = field(default_factory=list)
    bomb: bytes = b""
    too_large: bytes = b""

    @classmethod
    def build(cls, max_upload_bytes: int) -> Corpus:
        corpus = cls()
        for seed in range(12):
            jpeg = photo_jpeg(640, 480, noise=8 + seed, quality=85, seed=seed)
            corpus.photos.append((f"p{seed}.jpg", jpeg, "image/jpeg"))
        for seed in range(4):
            buffer = io.BytesIO()
            Image.open(io.BytesIO(corpus.photos[seed][1])).save(buffer, format="PNG")
            corpus.photos.append((f"p{seed}.png", buffer.getvalue(), "image/png"))
        truncated = corpus.photos[0][1][:2000]
        corpus.bad = [b"this is not an image", b"", truncated, b"%PDF-1.4\n%%EOF\n"]
        corpus.bomb = png_declaring(100_000, 100_000)
        corpus.too_large = b"\xff\xd8\xff" + bytes(max_upload_bytes)
        return corpus


async def send(client: httpx.AsyncClient, corpus: Corpus, kind: str, rng: random.Random) -> Outcome:
    """One request of ``kind``; its status (or transport error) and latency."""
    url, params = "/model/predict", {}
    if kind == "good":
        files = [("image", rng.choice(corpus.photos))]
    elif kind == "batch":
        files = [("image", photo) for photo in rng.sample(corpus.photos, rng.randint(2, 4))]
        if rng.random() < 0.5:
            files[rng.randrange(len(files))] = (
                "image",
                ("broken.jpg", rng.choice(corpus.bad), "image/jpeg"),
            )
        url = "/model/predict/batch"
    elif kind == "bad_image":
        files = [("image", ("bad.jpg", rng.choice(corpus.bad), "image/jpeg"))]
    elif kind == "bad_parameter":
        params = rng.choice([{"beam_size": 0}, {"max_length": 999}])
        files = [("image", rng.choice(corpus.photos))]
    elif kind == "pixel_bomb":
        files = [("image", ("bomb.png", corpus.bomb, "image/png"))]
    else:
        files = [("image", ("huge.jpg", corpus.too_large, "image/jpeg"))]
    started = time.perf_counter()
    try:
        response = await client.post(url, params=params, files=files)
    except httpx.HTTPError as exc:
        return Outcome(kind, type(exc).__name__, time.perf_counter() - started)
    latency_s = time.perf_counter() - started
    batch_errors = 0
    if kind == "batch" and response.status_code == 200:
        batch_errors = sum(item["status"] == "error" for item in response.json()["results"])
    return Outcome(kind, str(response.status_code), latency_s, batch_errors)


async def run_phase(base: str, corpus: Corpus, concurrency: int, kinds: list[str]) -> list[Outcome]:
    """``concurrency`` closed-loop clients work through ``kinds`` (one request each)."""
    pending = collections.deque(enumerate(kinds))
    outcomes: list[Outcome] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:

        async def worker() -> None:
            while pending:
                index, kind = pending.popleft()
                outcomes.append(await send(client, corpus, kind, random.Random(index)))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="times each phase's requests")
    parser.add_argument("--rounds", type=int, default=2, help="times the whole phase plan")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds before the end")
    parser.add_argument("--model-dir", type=Path, help="serve this model instead")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("serve_args", nargs="*", help="extra captioner serve options")
    args = parser.parse_args()

    max_upload_bytes = 10 * 1024 * 1024
    corpus = Corpus.build(max_upload_bytes)
    rng = random.Random(args.seed)
    names = list(KINDS)
    weights = [KINDS[name][0] for name in names]
    plan = [
        (concurrency, rng.choices(names, weights, k=round(count * args.scale)))
        for _ in range(args.rounds)
        for concurrency, count in PHASES
    ]
    total = sum(len(kinds) for _, kinds in plan)
    print(f"CPU: {cpu_name()}; {total} requests in {len(plan)} phases", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        files = full_size_model(Path(tmp) / "model", args.model_dir)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        process = start_server(files, port, *args.serve_args)
        try:
            warm = [name for name in names for _ in range(4)]
            asyncio.run(run_phase(base, corpus, 4, warm))
            time.sleep(args.settle)
            start_mib, _ = memory_mib(process.pid)
            reset_peak(process.pid)
            metrics_before = rejections(httpx.get(f"{base}/metrics").text)
            started = time.monotonic()
            report: list[Phase] = []
            for number, (concurrency, kinds) in enumerate(plan, start=1):
                phase_started = time.monotonic()
                outcomes = asyncio.run(run_phase(base, corpus, concurrency, kinds))
                elapsed = time.monotonic() - phase_started
                rss_mib, _ = memory_mib(process.pid)
                report.append((number, concurrency, outcomes, elapsed, rss_mib))
                print(f"phase {number} (c={concurrency}): {len(outcomes)} requests in "
                      f"{elapsed:.0f} s, RSS {rss_mib:.0f} MiB", flush=True)  # fmt: skip
            wall_s = time.monotonic() - started
            _, peak_mib = memory_mib(process.pid)
            time.sleep(args.settle)
            end_mib, _ = memory_mib(process.pid)
            metrics_after = rejections(httpx.get(f"{base}/metrics").text)
        finally:
            stop_server(process)

    counted = {
        reason: count - metrics_before.get(reason, 0)
        for reason, count in metrics_after.items()
        if count > metrics_before.get(reason, 0)
    }
    memory = {"start": start_mib, "peak": peak_mib, "end": end_mib}
    figures = summarize(report, wall_s, memory, counted)
    print_report(figures, args.settle)
    given = args.model_dir or args.serve_args or args.scale != 1.0 or args.rounds != 2 or args.seed
    write_figures("default" if not given else "given-options", figures)


def rejections(metrics: str) -> dict[str, float]:
    """The server's ``captioner_rejections_total`` by reason."""
    found = {}
    for line in metrics.splitlines():
        if line.startswith("captioner_rejections_total{"):
            labels, _, value = line.rpartition(" ")
            found[labels.split('"')[1]] = float(value)
    return found


def summarize(
    report: list[Phase],
    wall_s: float,
    memory: dict[str, float],
    counted: dict[str, float],
) -> dict[str, Any]:
    """The soak's figures: per phase, per kind of request, and overall (latencies in ms,
    memory in MiB); what the report prints and the figures file holds."""
    everything = [o for _, _, outcomes, _, _ in report for o in outcomes]
    phases = []
    for number, concurrency, outcomes, elapsed, rss_mib in report:
        good = [o.latency_s for o in outcomes if o.kind == "good" and o.status == "200"]
        batch = [o.latency_s for o in outcomes if o.kind == "batch" and o.status == "200"]
        phases.append(
            {
                "phase": number,
                "clients": concurrency,
                "requests": len(outcomes),
                "rps": round(len(outcomes) / elapsed, 1),
                "good_p50_ms": round(percentile(good, 0.5) * 1000),
                "good_p99_ms": round(percentile(good, 0.99) * 1000),
                "batch_p50_ms": round(percentile(batch, 0.5) * 1000),
                "batch_p99_ms": round(percentile(batch, 0.99) * 1000),
                "unexpected": sum(not _expected(o) for o in outcomes),
                "rss_end_mib": round(rss_mib),
            }
        )
    kinds = {}
    for kind, (_, expected) in KINDS.items():
        counts = collections.Counter(o.status for o in everything if o.kind == kind)
        kinds[kind] = {"expected": sorted(expected), "answers": dict(sorted(counts.items()))}
    return {
        "phases": phases,
        "kinds": kinds,
        "requests": len(everything),
        "wall_s": round(wall_s),
        "unexpected": sum(not _expected(o) for o in everything),
        "batch_files_refused": sum(o.batch_errors for o in everything),
        "memory_mib": {key: round(value) for key, value in memory.items()},
        "rejections_counted": {reason: round(count) for reason, count in sorted(counted.items())},
    }


def print_report(figures: dict[str, Any], settle_s: float) -> None:
    """The figures as Markdown tables and a few lines."""
    print()
    print("| phase | concurrency | requests | req/s | good p50 / p99 (ms) | batch p50 / p99 (ms) "
          "| unexpected | RSS at end (MiB) |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in figures["phases"]:
        print(
            f"| {row['phase']} | {row['clients']} | {row['requests']} | {row['rps']} | "
            f"{row['good_p50_ms']} / {row['good_p99_ms']} | "
            f"{row['batch_p50_ms']} / {row['batch_p99_ms']} | "
            f"{row['unexpected']} | {row['rss_end_mib']} |"
        )
    print()
    print("| kind | expected | answers |")
    print("|---|---|---|")
    for kind, row in figures["kinds"].items():
        answers = ", ".join(f"{n} x {status}" for status, n in row["answers"].items())
        print(f"| {kind} | {', '.join(map(str, row['expected']))} | {answers} |")
    memory = figures["memory_mib"]
    print()
    print(
        f"{figures['requests']} requests in {figures['wall_s']} s; unexpected answers: "
        f"{figures['unexpected']}; files refused inside batches: {figures['batch_files_refused']}"
    )
    print(
        f"RSS: start {memory['start']} MiB, peak {memory['peak']} MiB, end ({settle_s:g} s "
        f"after) {memory['end']} MiB: {memory['end'] - memory['start']:+} MiB"
    )
    print(
        "the server's own count of its refusals:",
        ", ".join(f"{reason} {count}" for reason, count in figures["rejections_counted"].items()),
    )


def _expected(outcome: Outcome) -> bool:
    return outcome.status.isdigit() and int(outcome.status) in KINDS[outcome.kind][1]


if __name__ == "__main__":
    main()
