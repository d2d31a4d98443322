#!/usr/bin/env python3
"""What does one replica need? Start-up time and resident memory, for resource requests.

Starts the server the way the image does (``docker/entrypoint.sh serve``, the venv of this
interpreter on PATH) on a full-size checkpoint of the original layout with seeded random
values (the real weights are not downloadable here; the tensors and so the memory are the
same), ``--starts`` times, then reports (medians over the starts):

- seconds from start to readiness (model load, graph trace and warm-up included), and the
  server's own account of loading and warm-up (its "model ... loaded" log line);
- resident memory (VmRSS) once ready and idle, after sequential requests, and after
  concurrent ones, with the peak (VmHWM): the memory request and limit come from these;
- what the peak is made of: Python, TensorFlow and the server's code (a process that
  imports them and runs one TensorFlow op), the model's weights (as the engine holds
  them), and the rest: TensorFlow's buffers for a batch and what the requests use;
- the sequential latency and the concurrent throughput, for the CPU request.

A container's memory also counts the page cache of the files it reads (the 149 MB
checkpoint, reclaimable), which this process-level figure leaves out.

Usage: python scripts/deploy_footprint.py [--precision fp32] [--starts 3] [--threads N]
                                          [--requests 20] [--concurrency 8]
       PYTHONPATH=OLD/src python scripts/deploy_footprint.py --no-breakdown  # an older one
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from captioner.assets import ModelFiles
from loadkit import (
    cpu_name,
    full_size_model,
    in_child,
    memory_mib,
    photo_jpeg,
    wait_ready,
    write_figures,
)

REPO = Path(__file__).resolve().parents[1]


def caption(url: str, body: bytes) -> float:
    """POST one image to /model/predict; returns the seconds it took."""
    boundary = "footprint"
    data = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"'
            f"\r\nContent-Type: image/jpeg\r\n\r\n"
        ).encode()
        + body
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        url + "/model/predict",
        data=data,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        response.read()
        assert response.status == 200
    return time.perf_counter() - start


def baseline_mib() -> tuple[float, float]:
    """Resident memory of Python + TensorFlow + the server's code, no model, one TF op run:
    after the import, and after the server's release of TensorFlow's start-up pages."""
    code = (
        "import captioner.api.app, tensorflow as tf; tf.constant(1.0) + 1; "
        "from captioner.memory import release_library_pages, resident_mib; "
        "before = resident_mib(); release_library_pages(); print(before, resident_mib())"
    )
    before, after = map(float, in_child(code).split()[-2:])
    return before, after


def weight_mib(files: ModelFiles, precision: str) -> tuple[float, str]:
    """The bytes of weights the engine holds in ``precision``, and the precision it ran."""
    code = (
        "import json, sys; from captioner.engine import Captioner; "
        "c = Captioner.load(sys.argv[1], sys.argv[2], precision=sys.argv[3]); "
        "print(json.dumps([c.weight_bytes, c.precision]))"
    )
    out = in_child(code, str(files.checkpoint), str(files.vocab), precision)
    weight_bytes, ran = json.loads(out.splitlines()[-1])
    return weight_bytes / 2**20, ran


def one_start(files: ModelFiles, options: argparse.Namespace) -> dict[str, float]:
    """Start the server once, load it, and measure; returns the figures of this start."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "TF_CPP_MIN_LOG_LEVEL": "1",
        "CAPTIONER_HOST": "127.0.0.1",
        "CAPTIONER_PORT": str(port),
        "CAPTIONER_OFFLINE": "true",
        "CAPTIONER_CHECKPOINT": str(files.checkpoint),
        "CAPTIONER_PRECISION": options.precision,
    }
    if options.threads:
        env["TF_NUM_INTRAOP_THREADS"] = str(options.threads)
    url = f"http://127.0.0.1:{port}"
    figures: dict[str, float] = {}
    with tempfile.TemporaryFile("w+") as log:
        start = time.monotonic()
        process = subprocess.Popen(
            [str(REPO / "docker" / "entrypoint.sh"), "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
        )
        try:
            wait_ready(url, process)
            figures["ready_s"] = time.monotonic() - start
            time.sleep(2)
            figures["idle"] = memory_mib(process.pid)[0]
            images = [
                photo_jpeg(640, 480, noise=8 + i % 20, quality=85, seed=i)
                for i in range(options.requests)
            ]
            latencies = [caption(url, body) for body in images]
            figures["sequential"] = memory_mib(process.pid)[0]
            figures["latency_ms"] = statistics.median(latencies) * 1000
            total = options.concurrency * 4
            began = time.perf_counter()
            with ThreadPoolExecutor(options.concurrency) as pool:
                list(pool.map(lambda i: caption(url, images[i % len(images)]), range(total)))
            figures["throughput"] = total / (time.perf_counter() - began)
            figures["concurrent"], figures["peak"] = memory_mib(process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        log.seek(0)
        text = log.read()
    # From the server's own log: when it started listening (Python and TensorFlow imported)
    # and when the model was loaded and warmed up.
    stamps = {
        key: _log_time(line)
        for line in text.splitlines()
        for key, marker in (("listening", "listening on"), ("loaded", "loaded from"))
        if marker in line
    }
    if {"listening", "loaded"} <= stamps.keys():
        figures["loading_s"] = stamps["loaded"] - stamps["listening"]
    warmup = re.search(r"loaded from .*\(warm-up ([\d.]+) s\)", text)
    if warmup:
        figures["warmup_s"] = float(warmup.group(1))
    return figures


def _log_time(line: str) -> float:
    """The time of a server log line (``2026-12-02 01:54:32,681 INFO ...``), in seconds."""
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


# The figures file's name, with its unit, for each figure of a start.
_FIGURE_NAMES = {
    "ready_s": "ready_s",
    "loading_s": "loading_s",
    "warmup_s": "warmup_s",
    "idle": "idle_mib",
    "sequential": "sequential_mib",
    "concurrent": "concurrent_mib",
    "peak": "peak_mib",
    "latency_ms": "latency_ms",
    "throughput": "throughput_images_s",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="fp32")
    parser.add_argument("--starts", type=int, default=3, help="server starts (medians)")
    parser.add_argument("--threads", type=int, help="TF_NUM_INTRAOP_THREADS (a CPU limit)")
    parser.add_argument("--requests", type=int, default=20, help="sequential requests")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients")
    parser.add_argument(
        "--no-breakdown",
        action="store_true",
        help="skip what the peak is made of (to measure an older captioner, which lacks "
        "the precision setting and captioner.memory: PYTHONPATH=its/src)",
    )
    parser.add_argument(
        "--label", help="the run's name in the figures file (default: from the options)"
    )
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        files = full_size_model(Path(tmp) / "model")
        if not options.no_breakdown:
            baseline = baseline_mib()
            weights, ran = weight_mib(files, options.precision)
        starts = [one_start(files, options) for _ in range(options.starts)]

    def median(key: str) -> float:
        return statistics.median(start[key] for start in starts)

    def spread(key: str, unit: str, digits: int = 0) -> str:
        values = sorted(start[key] for start in starts)
        text = f"{median(key):.{digits}f} {unit}"
        return text + (
            f" ({values[0]:.{digits}f} to {values[-1]:.{digits}f})" if len(values) > 1 else ""
        )

    total = options.concurrency * 4
    print(f"cpu:                          {cpu_name()}, {os.cpu_count()} CPUs")
    print(f"load average (1 min):         {os.getloadavg()[0]:.2f}")
    print(f"TF_NUM_INTRAOP_THREADS:       {options.threads or 'unset (all cores)'}")
    if not options.no_breakdown:
        print(f"precision:                    {options.precision} (runs {ran})")
    print(f"starts measured:              {len(starts)} (medians, then the range)")
    print(f"start to ready:               {spread('ready_s', 's', 1)}")
    if all("loading_s" in start for start in starts):
        print(f"  listening to model ready:   {spread('loading_s', 's', 1)} (load, warm-up)")
    if all("warmup_s" in start for start in starts):
        print(f"  of which warm-up:           {spread('warmup_s', 's', 1)}")
    print(f"resident, ready and idle:     {spread('idle', 'MiB')}")
    print(f"resident, after {options.requests} sequential:  {spread('sequential', 'MiB')}")
    print(f"resident, after {total} at c={options.concurrency}:    {spread('concurrent', 'MiB')}")
    print(f"peak resident (VmHWM):        {spread('peak', 'MiB')}")
    if not options.no_breakdown:
        print("peak, what it is made of:")
        imported, released = baseline
        print(
            f"  Python + TensorFlow + server code (no model): {released:5.0f} MiB "
            f"({imported:.0f} after the import, before its start-up pages are released)"
        )
        print(f"  the model's weights, held once ({ran}):       {weights:5.0f} MiB")
        rest = median("peak") - released - weights
        print(
            f"  the rest (a batch's buffers, library code serving runs, requests): {rest:.0f} MiB"
        )
    print(f"sequential latency, median:   {spread('latency_ms', 'ms')}")
    print(
        f"throughput at c={options.concurrency}:            {spread('throughput', 'images/s', 1)}"
    )
    figures: dict[str, Any] = {
        "starts": len(starts),
        "medians": {
            name: round(median(key), 2)
            for key, name in _FIGURE_NAMES.items()
            if all(key in start for start in starts)
        },
    }
    if not options.no_breakdown:
        figures["breakdown_mib"] = {
            "after_import": round(baseline[0]),
            "released": round(baseline[0] - baseline[1]),
            "no_model": round(baseline[1]),
            "weights": round(weights),
            "rest": round(median("peak") - baseline[1] - weights),
        }
    run = options.precision
    if options.threads:
        run += f"_threads-{options.threads}"
    if options.concurrency != 8 or options.requests != 20:
        run += f"_c{options.concurrency}-r{options.requests}"
    run += "_no-breakdown" if options.no_breakdown else ""
    write_figures(options.label or run, figures)


if __name__ == "__main__":
    main()
