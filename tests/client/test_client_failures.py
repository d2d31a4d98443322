"""The client against servers that fail on purpose: retries, waits, timeouts, typed errors.

No model here: a scripted HTTP server (``support.scripted_server``) answers what each test
needs, a port nobody listens on refuses connections, and a socket that accepts and never
answers stands for a hung server. Every scenario runs on both clients.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import pickle
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import pytest

from captioner.client import (
    AsyncClient,
    AuthenticationError,
    BadImageError,
    Client,
    ImageTooLargeError,
    InvalidParameterError,
    NotReadyError,
    RequestRejectedError,
    ServerConnectionError,
    ServerError,
    ServerOverloadedError,
    ServerTimeoutError,
)
from captioner.client.retry import RetryPolicy, parse_retry_after
from client.calls import open_client
from support.api_helpers import free_port
from support.scripted_server import Answer, ScriptedServer

IMAGE = b"\x89PNG not really"  # the scripted server never looks
FAST = {"backoff_s": 0.01, "max_wait_s": 0.05}  # retries without waiting long


@pytest.fixture
def hung_server() -> Iterator[tuple[str, list[socket.socket]]]:
    """A server that accepts connections and never answers; yields its URL and the
    connections it accepted."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    finally:
        stop.set()
        thread.join(5)
        for connection in accepted:
            connection.close()
        listener.close()


def retry_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "captioner.client"]


# --- connection, timeouts -------------------------------------------------------------------


def test_connection_refused_is_retried_then_a_typed_error(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with (
        caplog.at_level(logging.DEBUG, logger="captioner.client"),
        open_client(kind, url, max_retries=3, **FAST) as client,
        pytest.raises(ServerConnectionError) as caught,
    ):
        client.caption(IMAGE)
    error = caught.value
    assert error.attempts == 4 and error.status is None
    assert error.url == f"{url}/model/predict" and len(error.request_id or "") == 32
    assert "gave up after 4 tries" in str(error) and url in str(error)
    assert len(retry_lines(caplog)) == 3  # one line per retry


def test_a_server_that_never_answers_is_a_timeout_not_retried(
    kind: str, hung_server: tuple[str, list[socket.socket]]
) -> None:
    url, accepted = hung_server
    with open_client(kind, url, read_timeout=0.5, max_retries=3, **FAST) as client:
        started = time.monotonic()
        with pytest.raises(ServerTimeoutError) as caught:
            client.caption(IMAGE)
        waited = time.monotonic() - started
    assert 0.5 <= waited < 3.0
    assert caught.value.attempts == 1 and len(accepted) == 1
    assert "read timeout" in str(caught.value)


def test_the_connect_timeout_is_separate(hung_server: tuple[str, list[socket.socket]]) -> None:
    url, _ = hung_server  # it connects at once, so only the read timeout can fire
    with Client(url, connect_timeout=0.2, read_timeout=0.8, max_retries=0) as client:
        started = time.monotonic()
        with pytest.raises(ServerTimeoutError):
            client.caption(IMAGE)
    assert time.monotonic() - started >= 0.8


# --- 503, Retry-After, 5xx --------------------------------------------------------------------


def test_retry_after_is_honoured(kind: str) -> None:
    busy = Answer.error(503, "the request queue is full (1 of 1 waiting)", **{"Retry-After": "1"})
    with ScriptedServer([busy, busy]) as server, open_client(kind, server.url) as client:
        result = client.caption(IMAGE)
    first, second, third = (seen.at for seen in server.predictions)
    for waited in (second - first, third - second):
        assert 1.0 <= waited <= 1.0 * 1.25 + 0.3  # never early; at most a quarter late
    assert result.best is not None and result.best.text == "a red circle ."


def test_retry_after_as_an_http_date_and_the_cap() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, now) == 90.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=5), usegmt=True), now) == 0
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after("soon", now) is None and parse_retry_after(None) is None
    policy = RetryPolicy(max_wait_s=30.0, rng=random.Random(1))
    assert policy.wait_s(1, retry_after_s=90.0) == 30.0  # capped
    waits = [policy.wait_s(1, retry_after_s=2.0) for _ in range(200)]
    assert min(waits) >= 2.0 and max(waits) <= 2.5 and max(waits) - min(waits) > 0.2


def test_backoff_without_retry_after_doubles_with_jitter_up_to_the_cap() -> None:
    policy = RetryPolicy(backoff_s=0.5, max_wait_s=4.0, rng=random.Random(2))
    for retry, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
        waits = [policy.wait_s(retry) for _ in range(100)]
        assert ceiling / 2 <= min(waits) and max(waits) <= ceiling
    with pytest.raises(ValueError):
        RetryPolicy(max_retries=-1)


def test_overload_on_every_try_is_a_typed_error(kind: str) -> None:
    busy = Answer.error(503, "the request queue is full (1 of 1 waiting)")  # no Retry-After
    with (
        ScriptedServer(default=busy) as server,
        open_client(kind, server.url, max_retries=2, **FAST) as client,
        pytest.raises(ServerOverloadedError) as caught,
    ):
        client.caption(IMAGE)
    assert len(server.predictions) == 3
    error = caught.value
    assert error.status == 503 and error.attempts == 3
    assert str(error) == "the request queue is full (1 of 1 waiting) (gave up after 3 tries)"
    ids = {seen.headers["X-Request-ID"] for seen in server.predictions}
    assert ids == {error.request_id}  # one id for every try of one call


def test_a_503_from_a_server_that_is_not_ready_is_not_ready_error(kind: str) -> None:
    loading = Answer.error(503, "the server is not accepting requests (starting or draining)")
    probe = Answer(503, {"ready": False, "status": "error", "message": "loading the model"})
    with (
        ScriptedServer(default=loading, ready=probe) as server,
        open_client(kind, server.url, max_retries=1, **FAST) as client,
    ):
        with pytest.raises(NotReadyError, match="loading the model"):
            client.caption(IMAGE)
        assert client.ready() is False


@pytest.mark.parametrize("status", [500, 502, 504, 429])
def test_server_failures_are_retried(kind: str, status: int) -> None:
    with (
        ScriptedServer([Answer.error(status, "oops")] * 2) as server,
        open_client(kind, server.url, **FAST) as client,
    ):
        result = client.caption(IMAGE)
    assert len(server.predictions) == 3 and len(result.captions) == 2


def test_a_failing_server_is_a_server_error_after_the_retries(kind: str) -> None:
    with (
        ScriptedServer(default=Answer.error(500, "Internal Server Error")) as server,
        open_client(kind, server.url, max_retries=1, **FAST) as client,
        pytest.raises(ServerError) as caught,
    ):
        client.caption(IMAGE)
    assert caught.value.status == 500 and caught.value.attempts == 2


@pytest.mark.parametrize(
    ("answer", "error_type"),
    [
        (Answer.error(400, "the data is not a supported image"), BadImageError),
        (Answer(400, {"status": "error", "message": "Input payload validation failed",
                      "errors": {"beam_size": "beam_size must be between 1 and 10, got 11"}}),
         InvalidParameterError),
        (Answer.error(401, "a valid API key is required"), AuthenticationError),
        (Answer.error(403, "this key may not caption"), AuthenticationError),
        (Answer.error(413, "the image has 50000000 pixels, more than 40000000"),
         ImageTooLargeError),
        (Answer.error(404, "The requested URL was not found on the server."),
         RequestRejectedError),
        (Answer.error(408, "the request's body did not arrive within 60 s"),
         RequestRejectedError),
    ],
)  # fmt: skip
def test_4xx_is_never_retried_and_carries_the_servers_message(
    kind: str, answer: Answer, error_type: type[Exception]
) -> None:
    with (
        ScriptedServer(default=answer) as server,
        open_client(kind, server.url, **FAST) as client,
        pytest.raises(error_type) as caught,
    ):
        client.caption(IMAGE)
    assert len(server.predictions) == 1
    error = caught.value
    assert isinstance(answer.body, dict)
    assert str(error).startswith(answer.body["message"])
    assert error.status == answer.status and error.attempts == 1  # type: ignore[attr-defined]
    if isinstance(error, InvalidParameterError):
        assert error.errors == {"beam_size": "beam_size must be between 1 and 10, got 11"}
        assert "beam_size must be between 1 and 10" in str(error)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and repr(copy) == repr(error)


def test_an_answer_that_is_not_captioners_is_a_server_error(kind: str) -> None:
    page = Answer(200, b"<html>Welcome to nginx!</html>")
    with (
        ScriptedServer(default=page) as server,
        open_client(kind, server.url) as client,
        pytest.raises(ServerError, match=r"not a captioner prediction.*nginx"),
    ):
        client.caption(IMAGE)
    assert len(server.predictions) == 1


def test_maxs_answer_without_logprob_gets_one_from_the_probability() -> None:
    prediction = {"index": "0", "caption": "a cat .", "probability": 0.25}
    body = {"status": "ok", "predictions": [prediction]}
    with ScriptedServer(default=Answer(200, body)) as server, Client(server.url) as client:
        (caption,) = client.caption(IMAGE).captions
    assert caption.text == "a cat ." and caption.logprob == pytest.approx(math.log(0.25))


# --- what is sent ------------------------------------------------------------------------------


def test_the_api_key_is_sent_as_a_bearer_token_and_shown_nowhere(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    key = "sk-secret-0123456789"
    busy = Answer.error(503, "busy")
    with (
        caplog.at_level(logging.DEBUG),  # httpx's and httpcore's own logs too
        ScriptedServer([busy], default=Answer.error(401, "bad key")) as server,
        open_client(kind, server.url, api_key=key, **FAST) as client,
    ):
        with pytest.raises(AuthenticationError) as caught:
            client.caption(IMAGE, beam_size=2, max_length=9)
        shown = repr(client.client)
    assert {seen.headers["Authorization"] for seen in server.predictions} == {f"Bearer {key}"}
    assert server.predictions[0].path == "/model/predict?beam_size=2&max_length=9"
    error = caught.value
    everything = [shown, str(error), repr(error), *(r.getMessage() for r in caplog.records)]
    assert not [text for text in everything if key in text]


def test_credentials_in_the_url_are_not_shown() -> None:
    with ScriptedServer() as server:
        url = server.url.replace("http://", "http://user:pw@")
        with Client(url, max_retries=0) as client:
            assert client.base_urls == (server.url,) and "pw" not in repr(client)
            assert client.caption(IMAGE).server == server.url
    assert server.predictions[0].headers["Authorization"].startswith("Basic ")


def test_bad_base_urls_are_refused_at_once() -> None:
    for url in ["localhost:5000", "ftp://host", "http://", []]:
        with pytest.raises(ValueError, match="base_url"):
            AsyncClient(url)


# --- a fleet --------------------------------------------------------------------------------


def test_requests_go_round_robin_and_a_retry_goes_to_the_next_server(kind: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with (
        ScriptedServer() as first,
        ScriptedServer() as second,
        open_client(kind, [first.url, dead, second.url], backoff_s=5.0) as client,
    ):
        started = time.monotonic()
        servers = [client.caption(IMAGE).server for _ in range(6)]
        elapsed = time.monotonic() - started
    # The dead server's turns went to the next one at once, without a backoff wait.
    assert servers == [first.url, second.url, second.url] * 2
    assert elapsed < 5.0
    assert len(first.predictions) == 2 and len(second.predictions) == 4


def test_ready_is_false_unless_every_server_is_ready(kind: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with ScriptedServer() as up, open_client(kind, up.url) as client:
        assert client.ready() is True
        assert client.metadata().name == "a scripted server"
    with ScriptedServer() as up, open_client(kind, [up.url, dead]) as client:
        assert client.ready() is False


def test_wait_ready_says_why_when_it_gives_up() -> None:
    probe = Answer(503, {"ready": False, "status": "error", "message": "loading the model"})
    with (
        ScriptedServer(ready=probe) as server,
        Client(server.url) as client,
        pytest.raises(NotReadyError, match=r"not ready after 0\.3 s: loading the model"),
    ):
        client.wait_ready(timeout_s=0.3, interval_s=0.05)


# --- caption_many -----------------------------------------------------------------------------


def test_caption_many_takes_the_stream_lazily() -> None:
    taken = 0

    def endless() -> Iterator[tuple[str, bytes]]:
        nonlocal taken
        while True:
            taken += 1
            yield f"image-{taken}", IMAGE

    with ScriptedServer() as server, Client(server.url) as client:
        results = client.caption_many(endless(), concurrency=3)
        first = [next(results) for _ in range(5)]
        time.sleep(0.2)  # time for a greedy reader to run ahead
        assert taken <= 5 + 2 * 3 + 1
        results.close()  # cancels what is in flight
    assert all(result.ok for result in first)
    assert {r.source for r in first} <= {f"image-{i}" for i in range(1, taken + 1)}


def test_caption_many_keeps_the_order_when_asked(kind: str) -> None:
    # Answers come back out of order: the first image's is held back half a second.
    slow = {"n0": Answer(delay_s=0.5)}
    items = [(f"n{i}", IMAGE) for i in range(6)]
    with ScriptedServer(by_name=slow) as server, open_client(kind, server.url) as client:
        ordered = client.caption_many(items, concurrency=3, ordered=True)
    with ScriptedServer(by_name=slow) as server, open_client(kind, server.url) as client:
        completed = client.caption_many(items, concurrency=3)
    assert [r.source for r in ordered] == [name for name, _ in items]
    assert sorted(r.source for r in completed) == [name for name, _ in items]
    assert completed[-1].source == "n0"  # as completed: the delayed one came last


def test_caption_many_in_order_waits_for_a_slow_image_without_spinning(kind: str) -> None:
    # The later answers come at once and the first one's a second later: waiting for it
    # must sleep. Waking on the finished later ones, again and again, burned a core.
    slow = {"n0": Answer(delay_s=1.0)}
    items = [(f"n{i}", IMAGE) for i in range(6)]
    with ScriptedServer(by_name=slow) as server, open_client(kind, server.url) as client:
        cpu_before, wall_before = time.process_time(), time.monotonic()
        ordered = client.caption_many(items, concurrency=6, ordered=True)
        cpu_s, wall_s = time.process_time() - cpu_before, time.monotonic() - wall_before
    assert [r.source for r in ordered] == [name for name, _ in items]
    assert wall_s >= 1.0
    assert cpu_s < 0.4, f"{cpu_s:.2f} s of CPU in {wall_s:.2f} s waiting for one answer"


def test_caption_many_records_per_image_errors_and_raises_run_wide_ones(
    kind: str, tmp_path: Path
) -> None:
    bad = Answer.error(400, "the data is not a supported image")
    big = Answer.error(413, "the upload is larger than the limit of 10 bytes")
    with ScriptedServer([bad, big]) as server, open_client(kind, server.url) as client:
        results = client.caption_many(
            [("bad", IMAGE), ("big", IMAGE), str(tmp_path / "missing.jpg"), ("fine", IMAGE)],
            concurrency=1,
            ordered=True,
        )
    assert [(r.source, r.error) for r in results] == [
        ("bad", "the data is not a supported image"),
        ("big", "the upload is larger than the limit of 10 bytes"),
        (str(tmp_path / "missing.jpg"), "No such file or directory"),
        ("fine", None),
    ]
    refusing = Answer.error(401, "a valid API key is required")
    with (
        ScriptedServer(default=refusing) as server,
        open_client(kind, server.url) as client,
        pytest.raises(AuthenticationError),
    ):
        client.caption_many([("a", IMAGE)] * 10, concurrency=2)


def test_caption_many_records_a_server_failure_then_stops_when_the_server_is_gone(
    kind: str,
) -> None:
    failing = Answer.error(500, "Internal Server Error")
    with (
        ScriptedServer([failing, failing]) as server,
        open_client(kind, server.url, max_retries=1, **FAST) as client,
    ):
        results = client.caption_many([("a", IMAGE), ("b", IMAGE)], concurrency=1)
    assert results[0].error == "Internal Server Error (gave up after 2 tries)"
    assert results[1].ok

    url = f"http://127.0.0.1:{free_port()}"
    with open_client(kind, url, max_retries=0) as client:
        with pytest.raises(ServerConnectionError):
            client.caption_many(((f"{i}", IMAGE) for i in range(1000)), max_consecutive_failures=5)
        everything = client.caption_many(
            [(f"{i}", IMAGE) for i in range(8)], max_consecutive_failures=None
        )
    assert len(everything) == 8 and all("no connection" in (r.error or "") for r in everything)


def test_caption_many_refuses_what_it_cannot_name() -> None:
    with ScriptedServer() as server, Client(server.url) as client:
        with pytest.raises(TypeError, match="bytes need a name"):
            list(client.caption_many([IMAGE]))  # type: ignore[list-item]
        with pytest.raises(ValueError, match="concurrency"):
            list(client.caption_many([], concurrency=0))


def test_async_caption_many_takes_an_async_iterable_and_cancels_on_break() -> None:
    async def scenario(url: str) -> list[str]:
        async def names() -> AsyncIterator[tuple[str, bytes]]:
            for i in range(100):
                yield f"a{i}", IMAGE

        async with AsyncClient(url) as client:
            seen = []
            async for result in client.caption_many(names(), concurrency=4):
                seen.append(result.source)
                if len(seen) == 10:
                    break
            return seen

    with ScriptedServer() as server:
        seen = asyncio.run(scenario(server.url))
        assert len(seen) == 10 and len(server.predictions) <= 10 + 2 * 4


# --- sources, and the client's weight -----------------------------------------------------------


def test_caption_takes_a_path_bytes_or_a_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(IMAGE)
    with ScriptedServer() as server, Client(server.url) as client:
        for image in [path, str(path), IMAGE, bytearray(IMAGE), io.BytesIO(IMAGE)]:
            assert client.caption(image).best is not None
        with path.open("rb") as file:
            assert client.caption(file).best is not None
        with path.open("r") as text, pytest.raises(TypeError, match="binary"):
            client.caption(text)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="path, bytes or a binary file"):
            client.caption(42)  # type: ignore[arg-type]
        with pytest.raises(FileNotFoundError):
            client.caption(tmp_path / "missing.jpg")
    assert len(server.predictions) == 6


def test_a_closed_client_says_so() -> None:
    client = Client("http://127.0.0.1:1")
    client.close()
    client.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        client.ready()


def test_importing_the_client_loads_neither_tensorflow_nor_numpy() -> None:
    code = (
        "import sys, captioner.client; "
        "print(sorted(m for m in ('tensorflow', 'numpy', 'PIL', 'fastapi') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
