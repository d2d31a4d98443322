#!/usr/bin/env python3
"""What does one replica need? Start-up time and resident memory, for resource requests.

Starts the server the way the image does (``docker/entrypoint.sh serve``, the venv of this
interpreter on PATH) on a full-size checkpoint of the original layout with seeded random
values (the real weights are not downloadable here; the tensors and so the memory are the
same), then reports:

- seconds from start to readiness (model load, graph trace and warm-up included);
- resident memory (VmRSS) once ready and idle, after sequential requests, and after
  concurrent ones, with the peak (VmHWM): the memory request and limit come from these;
- the sequential latency and the concurrent throughput, for the CPU request.

A container's memory also counts the page cache of the files it reads (the 149 MB
checkpoint, reclaimable), which this process-level figure leaves out.

Usage: python scripts/deploy_footprint.py [--threads N] [--requests 20] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import io
import os
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
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from checkpoints import write_full_size_checkpoint  # noqa: E402


def memory_mib(pid: int) -> tuple[float, float]:
    """``(VmRSS, VmHWM)`` of ``pid`` in MiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return tuple(int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM"))  # type: ignore[return-value]


def jpeg(seed: int) -> bytes:
    """A 640x480 JPEG whose pixels depend on ``seed``."""
    image = Image.effect_noise((640, 480), 40 + seed % 20).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


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


def wait_ready(url: str, process: subprocess.Popen[bytes], deadline_s: float = 600) -> None:
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        if process.poll() is not None:
            sys.exit(f"the server exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url + "/v2/health/ready", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.2)
    sys.exit("the server never turned ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, help="TF_NUM_INTRAOP_THREADS (a CPU limit)")
    parser.add_argument("--requests", type=int, default=20, help="sequential requests")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        files = write_full_size_checkpoint(Path(tmp) / "model")
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
        }
        if options.threads:
            env["TF_NUM_INTRAOP_THREADS"] = str(options.threads)
        url = f"http://127.0.0.1:{port}"
        start = time.monotonic()
        process = subprocess.Popen(
            [str(REPO / "docker" / "entrypoint.sh"), "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_ready(url, process)
            ready_s = time.monotonic() - start
            time.sleep(2)
            idle = memory_mib(process.pid)
            images = [jpeg(i) for i in range(options.requests)]
            latencies = [caption(url, body) for body in images]
            sequential = memory_mib(process.pid)
            total = options.concurrency * 4
            start = time.perf_counter()
            with ThreadPoolExecutor(options.concurrency) as pool:
                list(pool.map(lambda i: caption(url, images[i % len(images)]), range(total)))
            throughput = total / (time.perf_counter() - start)
            concurrent = memory_mib(process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)

    print(f"cpus on this machine:         {os.cpu_count()}")
    print(f"TF_NUM_INTRAOP_THREADS:       {options.threads or 'unset (all cores)'}")
    print(f"start to ready:               {ready_s:.1f} s")
    print(f"resident, ready and idle:     {idle[0]:.0f} MiB")
    print(f"resident, after {options.requests} sequential:  {sequential[0]:.0f} MiB")
    print(f"resident, after {total} at c={options.concurrency}:    {concurrent[0]:.0f} MiB")
    print(f"peak resident (VmHWM):        {concurrent[1]:.0f} MiB")
    print(f"sequential latency, median:   {statistics.median(latencies) * 1000:.0f} ms")
    print(f"throughput at c={options.concurrency}:            {throughput:.1f} images/s")


if __name__ == "__main__":
    main()
