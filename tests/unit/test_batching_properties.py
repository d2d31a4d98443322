"""MicroBatcher's accounting under random interleavings (Hypothesis).

Whatever mix of requests, bad images, preprocessing bugs, deadlines, caller timeouts and
cancellations a run sees, every admitted slot is given back exactly once: the depth never
goes below zero nor above the queue's size, everything is back to zero once the callers are
done, and closing has nothing left to drain.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from captioner.batching import MicroBatcher
from captioner.engine import Caption, ModelInfo
from captioner.errors import CaptionerError, InvalidImageError
from support.fake_engine import fake_info


@dataclass(frozen=True)
class Image:
    """What the scripted engine does with one upload: how long it decodes, how it ends."""

    kind: str  # "ok", "bad" (InvalidImageError) or "bug" (any other exception)
    decode_ms: int

    def encode(self) -> bytes:
        return f"{self.kind}:{self.decode_ms}".encode()


class ScriptedEngine:
    """An engine whose decoding time and failures are written in the uploaded bytes."""

    info: ModelInfo = fake_info()

    def __init__(self, inference_ms: int) -> None:
        self._inference_s = inference_ms / 1000

    def preprocess(self, image: bytes) -> np.ndarray:
        kind, decode_ms = image.decode().split(":")
        time.sleep(int(decode_ms) / 1000)
        if kind == "bad":
            raise InvalidImageError("not an image")
        if kind == "bug":
            raise RuntimeError("a bug in preprocessing")
        return np.zeros((299, 299, 3), np.float32)

    def caption_arrays(
        self, pixels: np.ndarray, beam_size: int = 3, max_length: int = 20
    ) -> list[list[Caption]]:
        time.sleep(self._inference_s)
        return [[Caption("a scripted caption", -1.0)] for _ in pixels]

    def warmup(self, batch_sizes: Iterable[int], beam_size: int = 3, max_length: int = 20) -> None:
        pass

    def check_parameters(self, beam_size: int, max_length: int) -> None:
        pass


class DepthLog:
    """The batcher's observer: every queue depth it reported."""

    def __init__(self) -> None:
        self.depths: list[int] = []

    def batch_ran(self, size: int, inference_s: float) -> None:
        pass

    def queue_waited(self, wait_s: float) -> None:
        pass

    def queue_depth_changed(self, depth: int) -> None:
        self.depths.append(depth)


@dataclass(frozen=True)
class Request:
    """One caller: its images, when it arrives, and how it leaves."""

    images: tuple[Image, ...]
    beam_size: int
    start_ms: int
    fate: str  # "waits", "cancelled" (at leave_ms) or "times out" (after leave_ms)
    leave_ms: int


images = st.builds(
    Image,
    kind=st.sampled_from(["ok", "ok", "ok", "bad", "bug"]),
    decode_ms=st.integers(0, 8),
)
requests = st.builds(
    Request,
    images=st.lists(images, min_size=1, max_size=4).map(tuple),
    beam_size=st.integers(1, 2),
    start_ms=st.integers(0, 10),
    fate=st.sampled_from(["waits", "cancelled", "times out"]),
    leave_ms=st.integers(0, 15),
)


async def one_caller(batcher: MicroBatcher, request: Request) -> None:
    await asyncio.sleep(request.start_ms / 1000)
    call = batcher.caption_many(
        [image.encode() for image in request.images], beam_size=request.beam_size, max_length=5
    )
    if request.fate == "times out":
        await asyncio.wait_for(call, request.leave_ms / 1000)
    else:
        await call


async def scenario(
    all_requests: list[Request],
    max_batch_size: int,
    max_queue_size: int,
    timeout_ms: int,
    inference_ms: int,
    preprocess_threads: int,
) -> None:
    log = DepthLog()
    batcher = MicroBatcher(
        ScriptedEngine(inference_ms),
        max_batch_size=max_batch_size,
        max_wait_s=0.002,
        max_gather_s=0.01,
        max_queue_size=max_queue_size,
        timeout_s=timeout_ms / 1000,
        preprocess_threads=preprocess_threads,
        observer=log,
    )
    await batcher.start()
    callers = [asyncio.create_task(one_caller(batcher, request)) for request in all_requests]

    async def cancel_later(task: asyncio.Task[None], after_ms: int) -> None:
        await asyncio.sleep(after_ms / 1000)
        task.cancel()

    cancellers = [
        cancel_later(task, request.start_ms + request.leave_ms)
        for task, request in zip(callers, all_requests, strict=True)
        if request.fate == "cancelled"
    ]
    await asyncio.gather(*cancellers)
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    for outcome in outcomes:  # the only ways a caller may end
        assert outcome is None or isinstance(
            outcome, CaptionerError | RuntimeError | asyncio.CancelledError | asyncio.TimeoutError
        ), repr(outcome)

    assert batcher.depth == 0 and batcher.waiting == 0
    assert all(0 <= depth <= max_queue_size for depth in log.depths), log.depths
    closing = time.monotonic()
    await asyncio.wait_for(batcher.aclose(30.0), 5.0)
    assert time.monotonic() - closing < 1.0  # nothing was left to drain


@settings(
    max_examples=60,
    deadline=None,  # wall-clock timing varies on a shared runner; the run is bounded anyway
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    all_requests=st.lists(requests, min_size=1, max_size=8),
    max_batch_size=st.integers(1, 4),
    max_queue_size=st.integers(2, 10),
    timeout_ms=st.sampled_from([5, 20, 1000]),
    inference_ms=st.integers(0, 5),
    preprocess_threads=st.integers(1, 2),
)
def test_every_admitted_slot_is_given_back_exactly_once(
    all_requests: list[Request],
    max_batch_size: int,
    max_queue_size: int,
    timeout_ms: int,
    inference_ms: int,
    preprocess_threads: int,
) -> None:
    asyncio.run(
        scenario(
            all_requests,
            max_batch_size,
            max_queue_size,
            timeout_ms,
            inference_ms,
            preprocess_threads,
        )
    )
