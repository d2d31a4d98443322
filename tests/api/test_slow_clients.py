"""Slow and stalled clients over real sockets: deadlines for headers and bodies, a connection
cap, and the server staying fast for everyone else meanwhile.

The server runs as ``captioner serve`` runs it (uvicorn, the guarded h11 protocol) in a
thread; the clients are raw asyncio sockets that trickle a byte now and then, so a plain
idle timeout would never fire. Deadlines are short (2 s, 3 s) to keep the test quick.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from captioner.api.app import create_app
from captioner.assets import ModelFiles
from support.api_helpers import free_port, make_settings, serving_on_loopback, wait_until_ready
from support.fake_engine import FakeEngine, png_bytes

pytestmark = pytest.mark.anyio

HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 3.0
SLOW_CLIENTS = 200  # of each kind
TRICKLE_S = 0.25  # a byte this often: far more often than any idle timeout
SLACK_S = 1.5  # a loaded CI machine's scheduling delay, on top of each deadline


@pytest.fixture(autouse=True)
def enough_file_descriptors() -> None:
    """Each connection is two sockets in this process (client and server side)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * SLOW_CLIENTS + 256
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


@dataclass
class Outcome:
    answer: bytes  # what the server sent before closing
    closed_after_s: float  # from connecting to the server's close


async def slow_client(port: int, first: bytes, drip: bytes, give_up_s: float) -> Outcome:
    """Send ``first``, then ``drip`` every TRICKLE_S until the server closes the connection."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(first)

    async def trickle() -> None:
        try:
            while True:
                await asyncio.sleep(TRICKLE_S)
                writer.write(drip)
                await writer.drain()
        except (ConnectionError, RuntimeError):
            return  # the server closed it

    dripping = asyncio.create_task(trickle())
    answer = bytearray()

    async def read_until_closed() -> None:
        while chunk := await reader.read(65536):
            answer.extend(chunk)

    with contextlib.suppress(ConnectionError, asyncio.TimeoutError):
        await asyncio.wait_for(read_until_closed(), give_up_s)
    closed_after_s = loop.time() - started
    dripping.cancel()
    writer.close()
    return Outcome(bytes(answer), closed_after_s)


def slow_headers(port: int) -> asyncio.Task[Outcome]:
    first = b"POST /model/predict HTTP/1.1\r\nHost: test\r\nX-Slow: "
    return asyncio.create_task(slow_client(port, first, b"a", give_up_s=30))


def stalled_body(port: int) -> asyncio.Task[Outcome]:
    first = (
        b"POST /model/predict HTTP/1.1\r\nHost: test\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
        b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
    )
    return asyncio.create_task(slow_client(port, first, b"\0", give_up_s=30))


def metric(text: str, sample: str) -> float:
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    assert match, f"{sample} not in metrics"
    return float(match.group(1))


async def test_slow_clients_are_cut_off_at_their_deadlines_and_others_stay_fast(
    tmp_path: Path, fake: FakeEngine
) -> None:
    settings = make_settings(
        tmp_path, header_timeout_s=HEADER_TIMEOUT_S, body_timeout_s=BODY_TIMEOUT_S
    )
    app = create_app(settings, engine=fake)
    with serving_on_loopback(app) as port:
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            # One caption first, untimed: the decoder's first call is not what is measured.
            files = {"image": ("warm.png", png_bytes("red"), "image/png")}
            assert (await client.post("/model/predict", files=files)).status_code == 200
        headers = [slow_headers(port) for _ in range(SLOW_CLIENTS)]
        bodies = [stalled_body(port) for _ in range(SLOW_CLIENTS)]
        latencies: list[float] = []
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            # Every slow connection open and trickling (the gauge counts this client too).
            opened_by = asyncio.get_running_loop().time() + HEADER_TIMEOUT_S
            while (
                metric((await client.get("/metrics")).text, "captioner_open_connections")
                < 2 * SLOW_CLIENTS + 1
            ):
                assert asyncio.get_running_loop().time() < opened_by, "connecting took too long"
                await asyncio.sleep(0.05)
            # Meanwhile, others are served as usual, and quickly.
            for colour in ("red", "green", "blue", "yellow"):
                started = time.perf_counter()
                ready = await client.get("/v2/health/ready")
                live = await client.get("/v2/health/live")
                files = {"image": ("a.png", png_bytes(colour), "image/png")}
                caption = await client.post("/model/predict", files=files)
                latencies.append(time.perf_counter() - started)
                assert (ready.status_code, live.status_code, caption.status_code) == (200,) * 3
                assert caption.json()["predictions"][0]["caption"] == f"a {colour} square"

            header_outcomes = await asyncio.gather(*headers)
            body_outcomes = await asyncio.gather(*bodies)
            text = (await client.get("/metrics")).text

    assert max(latencies) < 1.0, latencies  # three requests each round

    for outcome in header_outcomes:
        assert outcome.answer.startswith(b"HTTP/1.1 408 "), outcome.answer[:200]
        assert b"headers did not arrive within 2 s" in outcome.answer
        assert HEADER_TIMEOUT_S <= outcome.closed_after_s < HEADER_TIMEOUT_S + SLACK_S
    for outcome in body_outcomes:
        assert outcome.answer.startswith(b"HTTP/1.1 408 "), outcome.answer[:200]
        assert b"body did not arrive within 3 s" in outcome.answer
        assert b"connection: close" in outcome.answer.lower()
        assert BODY_TIMEOUT_S <= outcome.closed_after_s < BODY_TIMEOUT_S + SLACK_S

    dropped = 'captioner_connections_dropped_total{reason="%s"}'
    assert metric(text, dropped % "header_timeout") == SLOW_CLIENTS
    assert metric(text, 'captioner_rejections_total{reason="body_timeout"}') == SLOW_CLIENTS
    assert metric(text, "captioner_upload_bytes_held") == 0  # every reservation given back
    assert fake.preprocessed == 5  # the warm-up and four: the stalled uploads never did


async def test_a_stalled_body_hears_408_even_when_the_loop_was_held_past_both_deadlines(
    tmp_path: Path, fake: FakeEngine
) -> None:
    """The app answers 408 at the body deadline, the protocol closes a second later; a loop
    held up past both (a CPU-bound handler, a loaded machine) must not turn the 408 into a
    silent close."""
    settings = make_settings(
        tmp_path, header_timeout_s=HEADER_TIMEOUT_S, body_timeout_s=BODY_TIMEOUT_S
    )
    app = create_app(settings, engine=fake)

    @app.get("/hold")
    async def hold() -> dict[str, str]:
        time.sleep(BODY_TIMEOUT_S + 2.0)  # blocks the server's loop, as a CPU-bound bug would
        return {}

    with serving_on_loopback(app) as port:
        stalled = stalled_body(port)
        await asyncio.sleep(1.0)  # the body's deadlines are armed
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            assert (await client.get("/hold")).status_code == 200
        outcome = await stalled
    assert outcome.answer.startswith(b"HTTP/1.1 408 "), outcome.answer[:200]
    assert b"body did not arrive within 3 s" in outcome.answer


async def test_a_body_nobody_reads_is_cut_off_too(tmp_path: Path, fake: FakeEngine) -> None:
    """A body trickled after its answer (the route never reads it) still has its deadline."""
    settings = make_settings(
        tmp_path, header_timeout_s=HEADER_TIMEOUT_S, body_timeout_s=BODY_TIMEOUT_S
    )
    with serving_on_loopback(create_app(settings, engine=fake)) as port:
        first = b"GET /v2/health/live HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\r\n"
        outcome = await slow_client(port, first, b"x", give_up_s=30)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            text = (await client.get("/metrics")).text
    assert outcome.answer.startswith(b"HTTP/1.1 200 ")  # answered at once...
    # ...then closed at the body deadline (plus the protocol's second of grace).
    assert BODY_TIMEOUT_S + 1.0 <= outcome.closed_after_s < BODY_TIMEOUT_S + 1.0 + SLACK_S
    assert metric(text, 'captioner_connections_dropped_total{reason="body_timeout"}') == 1


async def test_connections_over_the_cap_get_503_and_are_closed(
    tmp_path: Path, fake: FakeEngine
) -> None:
    settings = make_settings(tmp_path, max_connections=20, header_timeout_s=HEADER_TIMEOUT_S)
    app = create_app(settings, engine=fake)

    async def until_open(count: int) -> None:
        """Wait until the server has counted ``count`` open connections (its own gauge)."""
        deadline = time.monotonic() + 10
        registry = app.state.metrics.registry
        while registry.get_sample_value("captioner_open_connections") != count:
            assert time.monotonic() < deadline, "the server never counted the connections"
            await asyncio.sleep(0.01)

    with serving_on_loopback(app) as port:
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        await until_open(20)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as extra:
            answer = extra.recv(4096)  # sent before the client says anything
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert b"retry-after: 1" in answer.lower()
        assert b"maximum of 20 open connections" in answer
        for connection in held:
            connection.close()
        await until_open(0)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/v2/health/live")).status_code == 200
            text = (await client.get("/metrics")).text
    assert metric(text, 'captioner_connections_dropped_total{reason="connection_limit"}') == 1


@pytest.mark.slow
def test_deadlines_hold_under_plain_uvicorn_factory(tmp_path: Path, tiny_model: ModelFiles) -> None:
    """``uvicorn --factory captioner.api.app:create_app --http <the guarded protocol>``."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPTIONER_")}
    env.update(
        CAPTIONER_CHECKPOINT=str(tiny_model.checkpoint),
        CAPTIONER_VOCAB=str(tiny_model.vocab),
        CAPTIONER_MODEL_DIR=str(tmp_path / "unused"),
        CAPTIONER_OFFLINE="true",
        CAPTIONER_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S),
        CAPTIONER_BODY_TIMEOUT_S=str(BODY_TIMEOUT_S),
        CAPTIONER_MAX_BATCH_SIZE="1",  # one graph to warm up: a quicker start
    )
    command = [
        sys.executable, "-m", "uvicorn", "--factory", "captioner.api.app:create_app",
        "--http", "captioner.api.protocol:GuardedH11Protocol",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env)
    try:
        wait_until_ready(process, f"http://127.0.0.1:{port}", 120, lambda: "uvicorn exited")

        async def both() -> tuple[Outcome, Outcome]:
            return await asyncio.gather(slow_headers(port), stalled_body(port))

        header_outcome, body_outcome = asyncio.run(both())
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    assert header_outcome.answer.startswith(b"HTTP/1.1 408 ")
    assert header_outcome.closed_after_s < HEADER_TIMEOUT_S + SLACK_S
    assert body_outcome.answer.startswith(b"HTTP/1.1 408 ")
    assert body_outcome.closed_after_s < BODY_TIMEOUT_S + SLACK_S
