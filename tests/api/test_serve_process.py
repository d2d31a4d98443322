"""``captioner serve`` as a real process on 127.0.0.1: start, answer, refuse a huge upload
before reading it, and drain on SIGTERM so that an accepted request still completes."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from captioner.assets import ModelFiles
from support.api_helpers import free_port, wait_until_ready

pytestmark = pytest.mark.slow


def png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def server(tmp_path: Path, tiny_model: ModelFiles) -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPTIONER_")}
    env["CAPTIONER_MAX_UPLOAD_BYTES"] = "100000"  # through the environment, as in Docker
    command = [
        sys.executable, "-m", "captioner", "serve",
        "--host", "127.0.0.1", "--port", str(port),
        "--checkpoint", str(tiny_model.checkpoint), "--vocab", str(tiny_model.vocab),
        "--model-dir", str(tmp_path / "unused"), "--offline",
        "--max-batch-size", "2",
        "--max-batch-wait-ms", "1500",  # a lone request waits 1.5 s: time to signal mid-queue
    ]  # fmt: skip
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(
            process, base, 120, lambda: process.stdout.read() if process.stdout else ""
        )
        yield process, base
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def test_serve_answers_refuses_big_uploads_and_drains_on_sigterm(
    server: tuple[subprocess.Popen[str], str],
) -> None:
    process, base = server
    assert httpx.get(f"{base}/v2/health/live").json() == {"live": True}
    swagger = httpx.get(f"{base}/swagger.json")
    assert swagger.headers["content-type"] == "application/json"

    # A declared body of 100 MB: the 413 arrives while the body is still unsent.
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(
            b"POST /model/predict HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 100000000\r\n\r\n--b\r\n"
        )
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):  # head, JSON body
            chunk = raw.recv(4096)
            assert chunk, "the server closed without answering"
            answer += chunk
    text = answer.decode("latin-1")
    assert text.startswith("HTTP/1.1 413"), text
    assert "larger than the limit of 100,000 bytes (97.7 KiB) for one image" in text

    # An accepted request is queued (1.5 s batch window) when SIGTERM arrives.
    outcome: dict[str, httpx.Response] = {}

    def send() -> None:
        files = {"image": ("a.png", png(1), "application/octet-stream")}
        outcome["response"] = httpx.post(f"{base}/model/predict", files=files, timeout=30)

    client = threading.Thread(target=send)
    client.start()
    deadline = time.monotonic() + 10
    while not re.search(r"^captioner_queue_depth 1\.0$", httpx.get(f"{base}/metrics").text, re.M):
        assert time.monotonic() < deadline, "the request never reached the queue"
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    client.join(30)

    response = outcome["response"]
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) >= 1
    assert process.wait(30) == 0
    log = process.stdout.read() if process.stdout else ""
    access = [line for line in log.splitlines() if "captioner.access" in line]
    assert any('"route": "/model/predict"' in line and '"status": 200' in line for line in access)
    assert "draining" in log


def test_serve_exits_1_when_the_model_cannot_be_loaded(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPTIONER_")}
    command = [
        sys.executable, "-m", "captioner", "serve", "--host", "127.0.0.1",
        "--port", str(free_port()), "--model-dir", str(tmp_path / "empty"), "--offline",
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "Error:" in done.stderr and "captioner download" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_stalled_upload_cannot_hold_a_stop_past_drain_plus_shutdown_timeout(
    tmp_path: Path,
) -> None:
    """A client that sends headers and part of a body, then nothing: SIGTERM still ends the
    process within ``drain_timeout_s + shutdown_timeout_s`` (the sum the grace periods are
    sized by), long before the body's own deadline would cut the client off."""
    drain_s, shutdown_s, margin_s = 3, 2, 4.0
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPTIONER_")}
    command = [
        sys.executable, "-m", "captioner", "serve", "--model", "demo",
        "--port", str(port), "--model-dir", str(tmp_path / "unused"),
        "--drain-timeout-s", str(drain_s), "--shutdown-timeout-s", str(shutdown_s),
        "--body-timeout-s", "120", "--max-batch-size", "1",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(
            process, base, 120, lambda: process.stdout.read() if process.stdout else ""
        )
        stalled = socket.create_connection(("127.0.0.1", port), timeout=30)
        stalled.sendall(
            b"POST /model/predict HTTP/1.1\r\nHost: test\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
            b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
            + png(0)[:1000]
        )
        # Wait until the request is in the app, reading its body (its bytes admitted).
        deadline = time.monotonic() + 30
        while not re.search(
            r"^captioner_upload_bytes_held [1-9]", httpx.get(f"{base}/metrics").text, re.M
        ):
            assert time.monotonic() < deadline, "the stalled upload never reached the app"
            time.sleep(0.02)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=60)
        stopped_s = time.monotonic() - signalled
        stalled.close()
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
    output = process.stdout.read() if process.stdout else ""
    assert returncode == 0, output
    assert stopped_s < drain_s + shutdown_s + margin_s, (stopped_s, output)
    assert "timeout graceful shutdown exceeded" in output  # the upload was cut off, not done
