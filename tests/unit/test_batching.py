"""MicroBatcher on the fake engine: batching, grouping, bounds, deadlines, drain, one thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from captioner.batching import Captioned, MicroBatcher
from captioner.errors import (
    DeadlineExceededError,
    InvalidImageError,
    ModelNotReadyError,
    OverloadedError,
)
from support.fake_engine import FakeEngine, png_bytes

pytestmark = pytest.mark.anyio

COLOURS = ["red", "green", "blue", "yellow", "cyan", "magenta", "white", "black"]


@asynccontextmanager
async def running(engine: FakeEngine, **options: Any) -> AsyncIterator[MicroBatcher]:
    settings: dict[str, Any] = {
        "max_batch_size": 8,
        "max_wait_s": 0.002,
        "max_queue_size": 64,
        "timeout_s": 10.0,
    }
    settings.update(options)
    engine.warmup([])  # loads the decoder before any deadline runs, as the server's start does
    batcher = MicroBatcher(engine, **settings)
    await batcher.start()
    try:
        yield batcher
    finally:
        engine.gate = None  # never leave the worker blocked
        await batcher.aclose(5.0)


def caption_task(
    batcher: MicroBatcher, colour: str, beam_size: int = 3, max_length: int = 20
) -> asyncio.Task[Captioned]:
    """Caption a solid image of ``colour`` in the background."""
    return asyncio.create_task(
        batcher.caption(png_bytes(colour), beam_size=beam_size, max_length=max_length)
    )


async def hold_worker(engine: FakeEngine, batcher: MicroBatcher) -> asyncio.Task[Captioned]:
    """Start one request and keep the worker busy with it until ``engine.gate`` is set."""
    engine.gate = threading.Event()
    engine.entered.clear()  # set by any earlier engine call
    task = asyncio.create_task(
        batcher.caption(png_bytes("black"), beam_size=3, max_length=20), name="holder"
    )
    assert await asyncio.to_thread(engine.entered.wait, 5)
    return task


async def wait_until(condition: Any, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"
        await asyncio.sleep(0.005)


def caption_of(outcome: Captioned) -> str:
    return outcome.captions[0].text


async def test_requests_queued_behind_a_batch_run_together_and_get_their_own_captions() -> None:
    engine = FakeEngine()
    async with running(engine) as batcher:
        holder = await hold_worker(engine, batcher)
        tasks = [caption_task(batcher, c) for c in COLOURS[:5]]
        await wait_until(lambda: batcher.depth == 5 and batcher.waiting == 5)
        assert engine.gate is not None
        engine.gate.set()
        results = await asyncio.gather(*tasks)
        await holder
    assert engine.batch_sizes == [1, 5]
    assert [caption_of(r) for r in results] == [f"a {c} square" for c in COLOURS[:5]]
    assert all(r.batch_size == 5 for r in results)


async def test_batches_never_exceed_the_maximum() -> None:
    engine = FakeEngine()
    async with running(engine, max_batch_size=4) as batcher:
        holder = await hold_worker(engine, batcher)
        tasks = [caption_task(batcher, "red") for _ in range(10)]
        await wait_until(lambda: batcher.waiting == 10)
        assert engine.gate is not None
        engine.gate.set()
        await asyncio.gather(holder, *tasks)
    assert engine.batch_sizes == [1, 4, 4, 2]


async def test_different_beam_sizes_or_lengths_are_not_mixed() -> None:
    engine = FakeEngine()
    async with running(engine) as batcher:
        holder = await hold_worker(engine, batcher)
        knobs = [(3, 20), (2, 20), (3, 20), (3, 5), (2, 20)]
        tasks = []
        for count, (beam_size, max_length) in enumerate(knobs, start=1):  # queued in this order
            tasks.append(caption_task(batcher, "red", beam_size, max_length))
            await wait_until(lambda n=count: batcher.waiting == n)
        assert engine.gate is not None
        engine.gate.set()
        results = await asyncio.gather(holder, *tasks)
    # Oldest first: the (3, 20) pair, then (2, 20) pair, then (3, 5).
    assert engine.calls == [(1, 3, 20), (2, 3, 20), (2, 2, 20), (1, 3, 5)]
    assert [len(r.captions) for r in results[1:]] == [3, 2, 3, 3, 2]


async def test_uploads_still_being_decoded_join_the_batch_past_the_wait() -> None:
    engine = FakeEngine(decode_gates={"blue": threading.Event()})
    async with running(engine, max_wait_s=0.002, max_gather_s=10.0) as batcher:
        try:
            red, blue = caption_task(batcher, "red"), caption_task(batcher, "blue")
            await wait_until(lambda: batcher.waiting == 1 and batcher.depth == 2)
            await asyncio.sleep(0.2)  # 100 times max_wait: red still waits for blue
            assert engine.calls == []
        finally:
            engine.decode_gates["blue"].set()
        results = await asyncio.gather(red, blue)
    assert engine.batch_sizes == [2]
    assert [caption_of(r) for r in results] == ["a red square", "a blue square"]


async def test_waiting_for_a_slow_upload_is_bounded_by_the_gather_time() -> None:
    engine = FakeEngine(decode_gates={"blue": threading.Event()})
    async with running(engine, max_wait_s=0.002, max_gather_s=0.1) as batcher:
        try:
            red, blue = caption_task(batcher, "red"), caption_task(batcher, "blue")
            assert caption_of(await asyncio.wait_for(red, 5)) == "a red square"
            assert engine.batch_sizes == [1] and not blue.done()
        finally:
            engine.decode_gates["blue"].set()
        assert caption_of(await blue) == "a blue square"
    assert engine.batch_sizes == [1, 1]


async def queued_behind_a_batch_of_one(
    engine: FakeEngine, batcher: MicroBatcher, colour: str
) -> asyncio.Task[Captioned]:
    """A request that waited through a one-image batch, which has just answered its client."""
    holder = await hold_worker(engine, batcher)
    task = caption_task(batcher, colour)
    await wait_until(lambda: batcher.waiting == 1)
    assert engine.gate is not None
    engine.gate.set()
    await holder
    return task


async def test_requests_queued_behind_a_batch_wait_for_the_clients_it_answered() -> None:
    """Closed-loop clients come back together: a queue split in two groups merges again."""
    engine = FakeEngine()
    async with running(engine, max_wait_s=0.002, max_gather_s=10.0) as batcher:
        red = await queued_behind_a_batch_of_one(engine, batcher, "red")
        await asyncio.sleep(0.2)  # 100 times max_wait: red waits for the holder's client
        assert engine.batch_sizes == [1]
        blue = caption_task(batcher, "blue")  # the holder's client, back
        results = await asyncio.gather(red, blue)
    assert engine.batch_sizes == [1, 2]
    assert [caption_of(r) for r in results] == ["a red square", "a blue square"]


async def test_waiting_for_answered_clients_is_bounded_by_the_gather_time() -> None:
    engine = FakeEngine()
    async with running(engine, max_wait_s=0.002, max_gather_s=0.1) as batcher:
        red = await queued_behind_a_batch_of_one(engine, batcher, "red")
        assert caption_of(await asyncio.wait_for(red, 5)) == "a red square"  # nobody came
    assert engine.batch_sizes == [1, 1]


async def test_a_lone_client_coming_back_does_not_wait_for_more() -> None:
    engine = FakeEngine()
    async with running(engine, max_wait_s=0.002, max_gather_s=10.0) as batcher:
        for colour in ("red", "blue", "green"):  # each answered before the next is sent
            outcome = await asyncio.wait_for(caption_task(batcher, colour), 2)
            assert caption_of(outcome) == f"a {colour} square"
    assert engine.batch_sizes == [1, 1, 1]


async def test_an_upload_with_other_knobs_being_decoded_holds_nothing() -> None:
    engine = FakeEngine(decode_gates={"blue": threading.Event()})
    async with running(engine, max_wait_s=0.002, max_gather_s=10.0) as batcher:
        try:
            red, blue = caption_task(batcher, "red"), caption_task(batcher, "blue", beam_size=2)
            assert caption_of(await asyncio.wait_for(red, 5)) == "a red square"
        finally:
            engine.decode_gates["blue"].set()
        # Blue would now wait for red's client to come back; closing runs it at once.
    assert caption_of(await blue) == "a blue square"
    assert engine.calls == [(1, 3, 20), (1, 2, 20)]


async def test_full_queue_is_refused_before_any_decoding() -> None:
    engine = FakeEngine()
    async with running(engine, max_queue_size=2) as batcher:
        holder = await hold_worker(engine, batcher)
        queued = [caption_task(batcher, "red") for _ in range(2)]
        await wait_until(lambda: batcher.waiting == 2)
        decoded = engine.preprocessed
        with pytest.raises(OverloadedError) as refused:
            await batcher.caption(png_bytes("blue"), beam_size=3, max_length=20)
        assert refused.value.retry_after_s >= 1.0
        with pytest.raises(OverloadedError):  # all or nothing for several images
            await batcher.caption_many([png_bytes("red")] * 2, beam_size=3, max_length=20)
        assert engine.preprocessed == decoded
        assert engine.gate is not None
        engine.gate.set()
        await asyncio.gather(holder, *queued)
        # Room again once the queue has run.
        after = await batcher.caption(png_bytes("blue"), beam_size=3, max_length=20)
    assert caption_of(after) == "a blue square"


async def test_request_past_its_deadline_is_dropped_without_inference() -> None:
    engine = FakeEngine()
    async with running(engine, timeout_s=0.2) as batcher:
        holder = await hold_worker(engine, batcher)
        with pytest.raises(DeadlineExceededError):
            await batcher.caption(png_bytes("red"), beam_size=3, max_length=20)
        assert batcher.depth == 0 and batcher.waiting == 0
        assert engine.gate is not None
        engine.gate.set()
        await holder  # already running at its deadline: it is allowed to finish
    assert engine.batch_sizes == [1]


async def test_a_bad_image_fails_alone() -> None:
    engine = FakeEngine()
    async with running(engine) as batcher:
        outcomes = await batcher.caption_many(
            [png_bytes("red"), b"not an image", png_bytes("green")], beam_size=1, max_length=20
        )
    good_1, bad, good_2 = outcomes
    assert isinstance(bad, InvalidImageError)
    assert isinstance(good_1, Captioned) and caption_of(good_1) == "a red square"
    assert isinstance(good_2, Captioned) and caption_of(good_2) == "a green square"
    assert engine.batch_sizes == [2]


async def test_every_engine_call_runs_on_one_worker_thread() -> None:
    engine = FakeEngine()
    async with running(engine, max_batch_size=2) as batcher:
        await asyncio.gather(
            *(batcher.caption(png_bytes(c), beam_size=3, max_length=20) for c in COLOURS)
        )
    assert len(engine.threads) == 1
    assert next(iter(engine.threads)).startswith("captioner-model")
    assert threading.current_thread().name not in engine.threads


async def test_engine_failure_fails_its_batch_and_the_batcher_goes_on() -> None:
    engine = FakeEngine(fail_with=RuntimeError("boom"))
    async with running(engine) as batcher:
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.caption(png_bytes("red"), beam_size=3, max_length=20)
        engine.fail_with = None
        result = await batcher.caption(png_bytes("red"), beam_size=3, max_length=20)
    assert caption_of(result) == "a red square"


async def test_a_client_that_leaves_frees_its_place_and_costs_nothing() -> None:
    engine = FakeEngine()
    async with running(engine) as batcher:
        holder = await hold_worker(engine, batcher)
        leaver = caption_task(batcher, "red")
        await wait_until(lambda: batcher.waiting == 1)
        leaver.cancel()
        await asyncio.gather(leaver, return_exceptions=True)
        assert batcher.depth == 0 and batcher.waiting == 0
        assert engine.gate is not None
        engine.gate.set()
        await holder
    assert engine.batch_sizes == [1]


async def test_aclose_finishes_admitted_requests_then_refuses() -> None:
    engine = FakeEngine()
    batcher = MicroBatcher(
        engine, max_batch_size=8, max_wait_s=10.0, max_queue_size=8, timeout_s=30.0
    )
    await batcher.start()
    # With a 10 s batch wait, only the drain can make this batch run early.
    queued = caption_task(batcher, "red")
    await wait_until(lambda: batcher.waiting == 1)
    await asyncio.wait_for(batcher.aclose(5.0), 2.0)
    assert caption_of(await queued) == "a red square"
    with pytest.raises(ModelNotReadyError):
        await batcher.caption(png_bytes("red"), beam_size=3, max_length=20)


async def test_on_idle_runs_on_the_worker_once_the_queue_stays_empty_after_work() -> None:
    engine = FakeEngine()
    calls: list[str] = []

    def on_idle() -> None:
        calls.append(threading.current_thread().name)

    async with running(engine, on_idle=on_idle, idle_s=0.05) as batcher:
        await asyncio.sleep(0.15)
        assert calls == []  # nothing ran yet: nothing to give back
        await caption_task(batcher, "red")
        await wait_until(lambda: len(calls) == 1)
        await asyncio.sleep(0.15)
        assert len(calls) == 1  # once per idle spell, not every idle_s
        # Work that never leaves the queue empty (the worker held while it fills): no call
        # during it, however slow this machine is, and one after it.
        holder = await hold_worker(engine, batcher)
        queued = [caption_task(batcher, colour) for colour in COLOURS[:4]]
        await wait_until(lambda: batcher.waiting == 4)
        assert engine.gate is not None
        engine.gate.set()
        await asyncio.gather(holder, *queued)
        assert len(calls) == 1
        await wait_until(lambda: len(calls) == 2)
    assert set(calls) == engine.threads  # the model's worker thread


async def test_an_image_whose_deadline_passed_waiting_for_a_thread_is_not_decoded() -> None:
    engine = FakeEngine(decode_gates={"black": threading.Event()})
    async with running(engine, preprocess_threads=1, timeout_s=0.2) as batcher:
        slow = caption_task(batcher, "black")  # holds the one decoding thread
        late = caption_task(batcher, "red")  # waits for it past its deadline
        await asyncio.sleep(0.4)
        engine.decode_gates["black"].set()
        with pytest.raises(DeadlineExceededError, match="for decoding"):
            await late
        with pytest.raises(DeadlineExceededError):  # decoded, then expired in the queue
            await slow
        assert engine.preprocessed == 1  # red was never decoded
        assert batcher.depth == 0


async def test_a_request_cancelled_while_its_images_decode_gives_back_every_slot() -> None:
    engine = FakeEngine(decode_gates={"blue": threading.Event()})
    async with running(engine, max_queue_size=2, timeout_s=30.0) as batcher:
        leaver = asyncio.create_task(
            batcher.caption_many([png_bytes("red"), png_bytes("blue")], beam_size=3, max_length=20)
        )
        await wait_until(lambda: engine.preprocessed == 1)  # red decoded, blue still decoding
        leaver.cancel()
        await asyncio.gather(leaver, return_exceptions=True)
        engine.decode_gates["blue"].set()
        assert batcher.depth == 0 and batcher.waiting == 0
        # The whole queue is free again: two images fit.
        outcomes = await batcher.caption_many(
            [png_bytes("green"), png_bytes("red")], beam_size=3, max_length=20
        )
        assert [caption_of(o) for o in outcomes if isinstance(o, Captioned)] == [
            "a green square",
            "a red square",
        ]
        closing = asyncio.get_running_loop().time()
        await batcher.aclose(5.0)  # nothing is left admitted: no drain to wait out
        assert asyncio.get_running_loop().time() - closing < 1.0
    assert engine.batch_sizes == [2]
