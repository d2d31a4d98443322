"""The server's life over HTTP: loading, batching under concurrency, overload, deadline, drain."""

from __future__ import annotations

import asyncio
import re
import threading
from pathlib import Path

import httpx
import pytest

from captioner.api.app import create_app
from captioner.api.service import ModelState
from support.api_helpers import make_settings, serving
from support.fake_engine import FakeEngine, png_bytes

pytestmark = pytest.mark.anyio

COLOURS = ["red", "green", "blue", "yellow", "cyan", "magenta", "white", "black"]


def metric(text: str, name: str) -> float:
    """The value of one sample line of the Prometheus exposition."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in metrics"
    return float(match.group(1))


async def predict(client: httpx.AsyncClient, colour: str, **params: int) -> httpx.Response:
    return await client.post(
        "/model/predict",
        params=params,
        files={"image": (f"{colour}.png", png_bytes(colour), "image/png")},
    )


async def wait_until(condition, timeout_s: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"
        await asyncio.sleep(0.005)


async def test_not_ready_until_the_model_is_loaded(tmp_path: Path) -> None:
    fake = FakeEngine(warmup_gate=threading.Event())
    app = create_app(make_settings(tmp_path, max_batch_size=4), engine=fake)
    async with serving(app, wait_loaded=False) as client:
        live = await client.get("/v2/health/live")
        ready = await client.get("/v2/health/ready")
        refused = await predict(client, "red")
        metadata = await client.get("/model/metadata")
        before = (await client.get("/metrics")).text
        assert fake.warmup_gate is not None
        fake.warmup_gate.set()
        await app.state.service.wait_loaded()
        ready_after = await client.get("/v2/health/ready")
        after = (await client.get("/metrics")).text
    assert live.status_code == 200
    assert ready.status_code == 503
    assert ready.headers["Retry-After"] == "5"
    assert ready.json() == {
        "ready": False,
        "status": "error",
        "message": "the model is still loading",
    }
    assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
    assert refused.json()["message"] == "the model is still loading"
    assert metadata.status_code == 503
    assert metric(before, "captioner_model_ready") == 0.0
    assert ready_after.status_code == 200
    assert metric(after, "captioner_model_ready") == 1.0
    assert fake.warmed_up == [1]  # one image: it traces both graphs


async def test_a_model_that_cannot_load_keeps_the_server_unready(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, checkpoint=tmp_path / "missing" / "checkpoint")
    app = create_app(settings)
    async with serving(app) as client:
        ready = await client.get("/v2/health/ready")
        refused = await predict(client, "red")
    assert app.state.service.state is ModelState.FAILED
    assert ready.status_code == 503
    assert ready.json()["message"].startswith("the model failed to load:")
    assert "missing" in ready.json()["message"]
    assert refused.status_code == 503


async def test_concurrent_requests_are_batched_and_each_gets_its_own_captions(
    tmp_path: Path, fake: FakeEngine
) -> None:
    # A 300 ms batch window: the eight concurrent requests are all admitted within it.
    settings = make_settings(tmp_path, max_batch_size=8, max_batch_wait_ms=300.0)
    async with serving(create_app(settings, engine=fake)) as client:
        singles = {}
        for colour in COLOURS:  # one at a time: each alone in its batch
            singles[colour] = (await predict(client, colour)).json()
        assert fake.batch_sizes == [1] * 8
        together = await asyncio.gather(*(predict(client, colour) for colour in COLOURS))
        text = (await client.get("/metrics")).text
    assert max(fake.batch_sizes[8:]) > 1
    assert sum(fake.batch_sizes[8:]) == 8
    for colour, response in zip(COLOURS, together, strict=True):
        assert response.status_code == 200
        assert response.json() == singles[colour]
        assert response.json()["predictions"][0]["caption"] == f"a {colour} square"
    # The metrics show it too: 16 requests in fewer than 16 engine calls.
    assert metric(text, "captioner_batch_size_sum") == 16.0
    assert metric(text, "captioner_batch_size_count") < 16.0
    assert metric(text, 'captioner_batch_size_bucket{le="1.0"}') == 8.0


async def test_full_queue_gives_503_with_retry_after_and_the_server_stays_healthy(
    tmp_path: Path, fake: FakeEngine
) -> None:
    settings = make_settings(tmp_path, max_batch_size=1, max_queue_size=2)
    app = create_app(settings, engine=fake)
    service = app.state.service
    async with serving(app) as client:
        fake.gate = threading.Event()
        running = asyncio.create_task(predict(client, "black"))
        assert await asyncio.to_thread(fake.entered.wait, 5)
        queued = [asyncio.create_task(predict(client, c)) for c in ("red", "green")]
        await wait_until(lambda: service.queue_depth == 2)
        refused = await predict(client, "blue")
        fake.gate.set()
        done = await asyncio.gather(running, *queued)
        later = await predict(client, "blue")
        ready = await client.get("/v2/health/ready")
        text = (await client.get("/metrics")).text
    assert refused.status_code == 503
    assert int(refused.headers["retry-after"]) >= 1
    assert "queue is full" in refused.json()["message"]
    assert [r.status_code for r in done] == [200, 200, 200]
    assert later.status_code == 200 and ready.status_code == 200
    assert metric(text, 'captioner_rejections_total{reason="queue_full"}') == 1.0
    assert metric(text, "captioner_queue_depth") == 0.0


async def test_a_request_queued_past_its_deadline_is_504_and_never_runs(
    tmp_path: Path, fake: FakeEngine
) -> None:
    settings = make_settings(tmp_path, max_batch_size=1, request_timeout_s=0.3)
    async with serving(create_app(settings, engine=fake)) as client:
        fake.gate = threading.Event()
        running = asyncio.create_task(predict(client, "black"))
        assert await asyncio.to_thread(fake.entered.wait, 5)
        expired = await predict(client, "red")
        fake.gate.set()
        await running
        text = (await client.get("/metrics")).text
    assert expired.status_code == 504
    assert "dropped" in expired.json()["message"]
    assert fake.batch_sizes == [1]  # only the running request reached the engine
    assert metric(text, 'captioner_rejections_total{reason="deadline_exceeded"}') == 1.0


async def test_drain_finishes_accepted_requests_and_refuses_new_ones(
    tmp_path: Path, fake: FakeEngine
) -> None:
    settings = make_settings(tmp_path, max_batch_size=1)
    app = create_app(settings, engine=fake)
    service = app.state.service
    async with serving(app) as client:
        fake.gate = threading.Event()
        running = asyncio.create_task(predict(client, "red"))
        assert await asyncio.to_thread(fake.entered.wait, 5)
        queued = asyncio.create_task(predict(client, "green"))
        await wait_until(lambda: service.queue_depth == 1)

        draining = asyncio.create_task(service.drain())
        await wait_until(lambda: service.state is ModelState.DRAINING)
        ready = await client.get("/v2/health/ready")
        refused = await predict(client, "blue")
        live = await client.get("/v2/health/live")
        fake.gate.set()
        first, second = await asyncio.gather(running, queued)
        await asyncio.wait_for(draining, 5)
        text = (await client.get("/metrics")).text
    assert ready.status_code == 503 and "draining" in ready.json()["message"]
    assert refused.status_code == 503
    assert live.status_code == 200
    assert first.status_code == 200
    assert first.json()["predictions"][0]["caption"] == "a red square"
    assert second.status_code == 200
    assert second.json()["predictions"][0]["caption"] == "a green square"
    assert service.state is ModelState.STOPPED
    assert metric(text, "captioner_model_ready") == 0.0
