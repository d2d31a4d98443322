#!/usr/bin/env python3
"""Does a burst of large uploads stay within the memory budget? Resident memory before,
at the peak of and after bursts of clients that each send one ~9 MB photo at once.

Starts ``captioner serve`` on a full-size checkpoint of the original layout with seeded
random values (or ``--model-dir``), warms it up, then for each size in ``--clients``:
records the resident memory (VmRSS) once settled, restarts the kernel's peak counter
(VmHWM), opens that many connections that each POST the same image to ``/model/predict``
at the same moment (``--image photo``: a 3900x2600 JPEG of 9,160,570 bytes, under the
10 MiB upload limit; ``flat``: a 6000x6000 PNG of one colour, about 120 kB, 36 megapixels),
and reports every answer's status, the peak (VmHWM, and a 20 ms sampler as a check), the
memory ``--settle`` seconds after the last answer, and the files the burst left in the
server's temporary directory. The answers to expect: 200, or 503 with ``Retry-After`` when
the upload budget or the queue is full; with ``flat`` also 504, for requests whose deadline
passed while they waited for the decoding budget. Nothing else.

``--source DIR`` runs the server from another source tree (an older checkout's ``src``),
to compare before and after in one run on one machine.

Usage: python scripts/burst.py [--clients 100 200] [--settle 10] [--model-dir DIR]
                               [--source DIR] [--server-env NAME=VALUE ...]
                               [-- extra captioner serve options]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import io
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image

from loadkit import (
    RssSampler,
    cpu_name,
    free_port,
    full_size_model,
    memory_mib,
    photo_jpeg,
    reset_peak,
    start_server,
    stop_server,
    write_figures,
)


async def burst(url: str, image: bytes, clients: int) -> collections.Counter[str]:
    """``clients`` connections each POST ``image`` at once; the outcome of each."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=0)
    outcomes: collections.Counter[str] = collections.Counter()
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:

        async def one() -> None:
            try:
                files = {"image": ("big.jpg", image, "image/jpeg")}
                response = await client.post(url, files=files)
                outcomes[str(response.status_code)] += 1
            except httpx.HTTPError as exc:
                outcomes[type(exc).__name__] += 1

        await asyncio.gather(*(one() for _ in range(clients)))
    return outcomes


def flat_png(side: int = 6000) -> bytes:
    """A 36-megapixel PNG of one colour: about 120 kB to send, 108 MB once decoded."""
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (90, 140, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def warm_up(url: str, image: bytes) -> None:
    """A few requests, one large: the graphs run and the allocator has its working set."""
    small = photo_jpeg(640, 480, noise=12, quality=90)
    for body in (small, small, image, small):
        httpx.post(url, files={"image": ("a.jpg", body, "image/jpeg")}, timeout=300)


def files_in(directory: Path) -> set[Path]:
    """The files under ``directory`` (TensorFlow writes a few at start-up)."""
    return {path for path in directory.rglob("*") if path.is_file()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 200])
    parser.add_argument("--settle", type=float, default=10.0, help="seconds after a burst")
    parser.add_argument(
        "--image",
        choices=["photo", "flat"],
        default="photo",
        help="photo: a 3900x2600 JPEG of about 9 MB (the upload budget binds); flat: a "
        "6000x6000 PNG of about 120 kB (the decoding budget binds)",
    )
    parser.add_argument("--model-dir", type=Path, help="serve this model instead")
    parser.add_argument("--source", type=Path, help="run the server from this source tree")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for the server (e.g. MALLOC_ARENA_MAX=2); repeat",
    )
    parser.add_argument("serve_args", nargs="*", help="extra captioner serve options")
    args = parser.parse_args()

    image = photo_jpeg(3900, 2600, noise=40, quality=95) if args.image == "photo" else flat_png()
    print(f"CPU: {cpu_name()}; image: {args.image}, {len(image)} bytes", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        files = full_size_model(Path(tmp) / "model", args.model_dir)
        server_tmp = Path(tmp) / "server-tmp"
        server_tmp.mkdir()
        env = dict(item.split("=", 1) for item in args.server_env)
        env["TMPDIR"] = str(server_tmp)
        if args.source:
            env["PYTHONPATH"] = str(args.source.resolve())
        port = free_port()
        url = f"http://127.0.0.1:{port}/model/predict"
        process = start_server(files, port, *args.serve_args, env=env)
        rows = []
        bursts: dict[str, dict[str, object]] = {}
        try:
            warm_up(url, image)
            for clients in args.clients:
                time.sleep(args.settle)
                before, _ = memory_mib(process.pid)
                existing = files_in(server_tmp)
                reset_peak(process.pid)
                with RssSampler(process.pid) as sampler:
                    started = time.monotonic()
                    outcomes = asyncio.run(burst(url, image, clients))
                    elapsed = time.monotonic() - started
                _, peak = memory_mib(process.pid)
                time.sleep(args.settle)
                after, _ = memory_mib(process.pid)
                left = len(files_in(server_tmp) - existing)
                answers = dict(sorted(outcomes.items()))
                rows.append((clients, answers, before, peak, after, left))
                bursts[str(clients)] = {
                    "answers": answers,
                    "before_mib": round(before, 1),
                    "peak_mib": round(peak, 1),
                    "sampled_peak_mib": round(sampler.peak_mib, 1),
                    "after_mib": round(after, 1),
                    "took_s": round(elapsed, 1),
                    "new_temp_files": left,
                }
                print(
                    f"{clients} clients: {answers} in {elapsed:.1f} s; RSS before "
                    f"{before:.0f} MiB, peak {peak:.0f} MiB (sampled {sampler.peak_mib:.0f}), "
                    f"{args.settle:g} s after {after:.0f} MiB; new temporary files: {left}",
                    flush=True,
                )
        finally:
            stop_server(process)

    print()
    print("| clients | answers | RSS before (MiB) | peak (MiB) | after (MiB) | new temp files |")
    print("|---:|---|---:|---:|---:|---:|")
    for clients, counts, before, peak, after, left in rows:
        text = ", ".join(f"{count} x {status}" for status, count in counts.items())
        print(f"| {clients} | {text} | {before:.0f} | {peak:.0f} | {after:.0f} | {left} |")
    given = args.source or args.serve_args or args.model_dir or args.server_env
    run = args.image + ("_given-options" if given else "")
    figures = {"image_bytes": len(image), "settle_s": args.settle, "bursts": bursts}
    write_figures(run, figures)


if __name__ == "__main__":
    main()
