"""Helpers for the HTTP API tests: test settings, and an app served in-process or on a port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from captioner.api.protocol import GuardedH11Protocol
from captioner.config import Settings


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for a test: nothing downloaded, nothing read from the environment's model."""
    values: dict[str, Any] = {
        "model_dir": tmp_path / "no-model",
        "offline": True,
        "max_batch_wait_ms": 2.0,
        "drain_timeout_s": 5.0,
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def serving(app: FastAPI, *, wait_loaded: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and talk HTTP to it in-process."""
    async with app.router.lifespan_context(app):
        if wait_loaded:
            await app.state.service.wait_loaded()
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


@contextmanager
def serving_on_loopback(app: FastAPI) -> Iterator[int]:
    """Serve the app as ``captioner serve`` does (uvicorn, the guarded protocol) on a free
    127.0.0.1 port, in a thread with its own event loop; yields the port once ready."""
    # IPPROTO_TCP spelt out: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it every small answer waits for the client's delayed ACK (40 ms).
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.bind(("127.0.0.1", 0))
    port = int(listener.getsockname()[1])
    config = uvicorn.Config(
        app, http=GuardedH11Protocol, ws="none", lifespan="on", log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not (server.started and app.state.service.ready):
            assert thread.is_alive() and time.monotonic() < deadline, "the server never started"
            time.sleep(0.01)
        yield port
    finally:
        server.should_exit = True
        thread.join(30)
        listener.close()


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now (for a server the test starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_ready(
    process: subprocess.Popen[Any], base: str, timeout_s: float, output: Callable[[], str]
) -> None:
    """Poll ``base``'s readiness probe until it answers 200; fail with the server's
    ``output()`` if the process exits first, or once ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert process.poll() is None, output()
        try:
            if httpx.get(f"{base}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server never became ready"
        time.sleep(0.2)


@contextmanager
def demo_server(log_path: Path, *options: str, timeout_s: float = 180) -> Iterator[str]:
    """``captioner serve --model demo`` as a process on a free 127.0.0.1 port, its output in
    ``log_path``, with ``options`` added; yields its base URL once ready, stops it after."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPTIONER_")}
    command = [
        sys.executable, "-m", "captioner", "serve", "--model", "demo", "--offline",
        "--host", "127.0.0.1", "--port", str(port),
        "--model-dir", str(log_path.parent / "unused"),
        *options,
    ]  # fmt: skip
    with log_path.open("w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(process, base, timeout_s, log_path.read_text)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
