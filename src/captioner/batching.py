"""MicroBatcher: gathers concurrent caption requests into batched engine calls on one thread.

The Inception encoder costs about the same for 1 image as for several (per image it gets
cheaper up to batch 4-8 on a CPU), so requests that arrive together are stacked into one
``caption_arrays`` call. The flow of one request::

    caption_many(images)          admit: refuse at once if the queue is full (no work spent)
      -> preprocess pool          decode + resize off the event loop; a bad image fails alone
      -> waiting deque            grouped by (beam_size, max_length); deadline enforced here
      -> _next_batch()            up to max_batch_size requests, or whatever came in max_wait_s
                                  (longer, up to max_gather_s, for images still being decoded
                                  and for the clients the last batch answered)
      -> _run_batch()             one engine call on the single worker thread that owns the model
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np

from captioner.errors import (
    CaptionerError,
    DeadlineExceededError,
    ModelNotReadyError,
    OverloadedError,
)

if TYPE_CHECKING:
    from captioner.engine import ModelInfo
    from captioner.results import Caption

__all__ = ["BatchObserver", "Captioned", "Engine", "MicroBatcher"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


class Engine(Protocol):
    """A loaded model, as the batcher and the server use it.

    :class:`captioner.engine.Captioner` is the engine; the tests serve a fake one.
    """

    info: ModelInfo

    def preprocess(self, image: bytes) -> np.ndarray:
        """Bytes -> float32 ``[299, 299, 3]`` in [-1, 1]; thread-safe."""
        ...

    def caption_arrays(
        self, pixels: np.ndarray, beam_size: int = 3, max_length: int = 20
    ) -> list[list[Caption]]:
        """float32 ``[B, 299, 299, 3]`` -> B caption lists, best first; one thread only."""
        ...

    def warmup(self, batch_sizes: Iterable[int], beam_size: int = 3, max_length: int = 20) -> None:
        """Trace and run the graphs before the first request."""
        ...

    def check_parameters(self, beam_size: int, max_length: int) -> None:
        """Raise ``InvalidRequestError`` for search parameters no call could use."""
        ...


class BatchObserver(Protocol):
    """Receives the batcher's measurements (the metrics module implements it)."""

    def batch_ran(self, size: int, inference_s: float) -> None:
        """One engine call of ``size`` requests took ``inference_s`` seconds."""

    def queue_waited(self, wait_s: float) -> None:
        """A request waited ``wait_s`` seconds between admission and its batch starting."""

    def queue_depth_changed(self, depth: int) -> None:
        """``depth`` requests are now admitted and not yet running."""


class _NullObserver:
    def batch_ran(self, size: int, inference_s: float) -> None:
        pass

    def queue_waited(self, wait_s: float) -> None:
        pass

    def queue_depth_changed(self, depth: int) -> None:
        pass


@dataclass(frozen=True)
class Captioned:
    """One image's captions (best first) and how many requests shared its engine call."""

    captions: list[Caption]
    batch_size: int


@dataclass(eq=False)
class _Pending:
    """One preprocessed image waiting for a batch; its caller awaits ``future``."""

    pixels: np.ndarray  # float32 [299, 299, 3] in [-1, 1]
    key: tuple[int, int]  # (beam_size, max_length): only equal keys share an engine call
    admitted_at: float  # time.monotonic() when the request was admitted
    deadline: float  # time.monotonic() after which it is dropped unrun
    future: asyncio.Future[Captioned] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    started: bool = False  # taken into a batch: too late to drop it


class MicroBatcher:
    """A bounded queue in front of one engine, batching concurrent requests.

    Guarantees: at most ``max_queue_size`` requests are admitted and not yet running (more
    raise :class:`OverloadedError` before any decoding); a request still queued at its
    deadline is dropped with :class:`DeadlineExceededError` and costs no inference (nor any
    decoding, if its deadline passed before a decoding thread was free); an
    undecodable image fails only its own request; every engine call runs on the same
    single worker thread.

    Args:
        engine: The model (see :class:`Engine`).
        max_batch_size: Most requests in one engine call.
        max_wait_s: Longest a request waits for company before its batch runs anyway.
        max_gather_s: Longest a request waits for company that is known to be coming:
            images with its knobs still being decoded, and as many new requests as the
            last engine call answered. Clients answered together (UIs, pipelines, load
            tools: each sends its next request when the last is answered) come back
            together; without this, their round trips and decoding would split them over
            several small batches for good, and every engine call pays the beam search's
            fixed cost again.
        max_queue_size: Most requests admitted and not yet running.
        timeout_s: Per-request deadline, counted from admission.
        preprocess_threads: Threads decoding images beside the worker.
        observer: Receives batch sizes, queue waits and queue depth.
        on_idle: Called on the worker thread once the queue has been empty for
            ``idle_s`` after some work (the server returns freed memory to the system).
        idle_s: How long the queue stays empty before ``on_idle``.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        max_batch_size: int,
        max_wait_s: float,
        max_queue_size: int,
        timeout_s: float,
        max_gather_s: float = 0.0,
        preprocess_threads: int = 2,
        observer: BatchObserver | None = None,
        on_idle: Callable[[], object] | None = None,
        idle_s: float = 1.0,
    ) -> None:
        if max_batch_size < 1 or max_queue_size < 1 or preprocess_threads < 1:
            raise ValueError("batch size, queue size and thread count must be at least 1")
        self._engine = engine
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_wait_s
        self._max_gather_s = max(max_gather_s, max_wait_s)
        self._max_queue_size = max_queue_size
        self._timeout_s = timeout_s
        self._observer: BatchObserver = observer or _NullObserver()
        self._on_idle = on_idle
        self._idle_s = idle_s
        self._worked = False  # a batch ran since on_idle was last called
        self._preprocess_pool = ThreadPoolExecutor(
            preprocess_threads, thread_name_prefix="captioner-preprocess"
        )
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="captioner-model")
        self._waiting: deque[_Pending] = deque()
        self._admitted = 0  # admitted and not yet running: preprocessing or waiting
        self._decoding: Counter[tuple[int, int]] = Counter()  # admitted, not yet waiting
        self._wakeup = asyncio.Event()
        self._accepting = False
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._batch_s = 0.0  # moving average of one engine call, for Retry-After
        self._idle_since = 0.0  # time.monotonic() when the last engine call ended
        self._answered = 0  # images the last engine call answered
        self._arrived = 0  # images admitted since then

    @property
    def depth(self) -> int:
        """Requests admitted and not yet running."""
        return self._admitted

    @property
    def waiting(self) -> int:
        """Requests decoded and waiting for a batch (the rest of ``depth`` is decoding)."""
        return len(self._waiting)

    async def start(self) -> None:
        """Start the batching loop; call once, from the event loop that will submit."""
        if self._task is not None:
            raise RuntimeError("MicroBatcher already started")
        self._accepting = True
        self._task = asyncio.create_task(self._loop(), name="captioner-batcher")

    async def run_in_worker(self, func: Callable[..., T], *args: object) -> T:
        """Run ``func(*args)`` on the model's worker thread and return its result."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, func, *args)

    async def caption(self, image: bytes, *, beam_size: int, max_length: int) -> Captioned:
        """Caption one image.

        Args:
            image: The encoded image (JPEG, PNG, ...), as uploaded.
            beam_size: Beam width; also the most captions returned.
            max_length: Longest caption in tokens, counting ``<S>`` and ``</S>``.

        Returns:
            Its captions and the size of the batch it ran in.

        Raises:
            OverloadedError: The queue is full.
            ModelNotReadyError: The batcher is not started, or is closing.
            InvalidImageError: The bytes are not an image the engine can read.
            DeadlineExceededError: It waited in the queue past its deadline.
        """
        (outcome,) = await self.caption_many([image], beam_size=beam_size, max_length=max_length)
        if isinstance(outcome, CaptionerError):
            raise outcome
        return outcome

    async def caption_many(
        self, images: Sequence[bytes], *, beam_size: int, max_length: int
    ) -> list[Captioned | CaptionerError]:
        """Caption several images; each succeeds or fails on its own.

        All images are admitted together or not at all, so a request is never half
        accepted when the queue is nearly full.

        Args:
            images: Encoded images, in order.
            beam_size: Beam width for all of them.
            max_length: Longest caption in tokens (counting ``<S>`` and ``</S>``), for all.

        Returns:
            One entry per image, in order: its :class:`Captioned`, or the
            :class:`CaptionerError` that stopped it (a bad image, a deadline).

        Raises:
            OverloadedError: The queue has no room for all the images.
            ModelNotReadyError: The batcher is not started, or is closing.
        """
        self._admit(len(images))
        deadline = time.monotonic() + self._timeout_s
        key = (beam_size, max_length)
        admitted_at = time.monotonic()
        # Each admitted image holds one slot. Until an image is put in the queue its slot is
        # this call's to give back, on every way out (bad images, a bug in preprocessing, the
        # caller cancelled while its images decode); once queued, whoever takes it out of the
        # queue gives it back (_take or _withdraw). Whatever happens, each is given back once.
        pending: list[_Pending | CaptionerError] = []
        queued: list[_Pending] = []
        try:
            self._decoding[key] += len(images)
            try:
                prepared = await asyncio.gather(
                    *(self._preprocess(image, deadline) for image in images),
                    return_exceptions=True,
                )
            finally:
                self._decoding[key] -= len(images)
            failure = next((p for p in prepared if isinstance(p, BaseException)), None)
            if failure is not None and not isinstance(failure, CaptionerError):
                raise failure  # a bug in preprocessing
            # The images of one call join the queue together, so they can share one batch.
            for pixels in prepared:  # arrays and CaptionerErrors: anything else was raised
                if isinstance(pixels, np.ndarray):
                    item = _Pending(
                        pixels=pixels, key=key, admitted_at=admitted_at, deadline=deadline
                    )
                    self._waiting.append(item)
                    queued.append(item)
                    pending.append(item)
                elif isinstance(pixels, CaptionerError):
                    pending.append(pixels)
        finally:
            self._release(len(images) - len(queued))
        self._wakeup.set()
        try:
            return list(await asyncio.gather(*(self._outcome(item) for item in pending)))
        except BaseException:  # the caller went away (or a batch failed): drop the unstarted
            for item in queued:
                if not item.started:
                    self._withdraw(item)
            raise

    async def aclose(self, timeout_s: float) -> None:
        """Stop admitting, finish every admitted request (up to ``timeout_s``), stop threads.

        Requests still unrun after ``timeout_s`` fail with :class:`ModelNotReadyError`.
        """
        self._accepting = False
        self._closing = True
        self._wakeup.set()
        drained = True
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            except asyncio.TimeoutError:
                drained = False
                self._task.cancel()
                for pending in self._waiting:
                    self._resolve(pending, ModelNotReadyError("the server shut down first"))
                self._waiting.clear()
        # A batch still inside the engine cannot be interrupted; do not wait for it then.
        self._worker.shutdown(wait=drained, cancel_futures=True)
        self._preprocess_pool.shutdown(wait=drained, cancel_futures=True)

    # --- admission ------------------------------------------------------------------------

    def _admit(self, count: int) -> None:
        if not self._accepting:
            raise ModelNotReadyError("the server is not accepting requests (starting or draining)")
        if self._admitted + count > self._max_queue_size:
            raise OverloadedError(
                f"the request queue is full ({self._admitted} of {self._max_queue_size} waiting)",
                retry_after_s=self._retry_after_s(),
            )
        self._set_admitted(self._admitted + count)
        self._arrived += count

    def _release(self, count: int = 1) -> None:
        if count:
            self._set_admitted(self._admitted - count)
            self._wakeup.set()  # a drain may be waiting for the count to reach 0

    def _set_admitted(self, count: int) -> None:
        self._admitted = count
        self._observer.queue_depth_changed(count)

    def _retry_after_s(self) -> float:
        """Roughly how long until the current queue has run: whole batches times their cost."""
        batches = math.ceil(self._admitted / self._max_batch_size)
        return max(1.0, batches * self._batch_s)

    # --- one request ----------------------------------------------------------------------

    async def _preprocess(self, image: bytes, deadline: float) -> np.ndarray:
        """Decode on the preprocessing pool, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._preprocess_pool, self._decode_in_time, image, deadline
        )

    def _decode_in_time(self, image: bytes, deadline: float) -> np.ndarray:
        """Decode, unless the deadline passed while the image waited for a thread."""
        if time.monotonic() >= deadline:
            raise DeadlineExceededError(
                f"the request waited {self._timeout_s:g} s for decoding and was dropped"
            )
        return self._engine.preprocess(image)

    async def _outcome(self, item: _Pending | CaptionerError) -> Captioned | CaptionerError:
        if isinstance(item, CaptionerError):
            return item
        try:
            return await self._wait_for(item)
        except CaptionerError as exc:
            return exc

    async def _wait_for(self, pending: _Pending) -> Captioned:
        """Await the result; at the deadline drop the request if it has not started."""
        remaining_s = max(0.0, pending.deadline - time.monotonic())
        try:
            return await asyncio.wait_for(asyncio.shield(pending.future), remaining_s)
        except asyncio.TimeoutError:
            if pending.started:  # already inside the engine: its result is moments away
                return await pending.future
            self._withdraw(pending)
            raise DeadlineExceededError(
                f"the request waited {self._timeout_s:g} s in the queue and was dropped"
            ) from None

    def _withdraw(self, pending: _Pending) -> None:
        """Take a request that has not started out of the queue for good."""
        pending.future.cancel()
        if pending in self._waiting:  # not already taken out (and released) by _take
            self._waiting.remove(pending)
            self._release()

    # --- batches --------------------------------------------------------------------------

    async def _loop(self) -> None:
        while (batch := await self._next_batch()) is not None:
            if batch:
                await self._run_batch(batch)
                self._worked = True
                self._idle_since = time.monotonic()
                self._answered, self._arrived = len(batch), 0

    async def _next_batch(self) -> list[_Pending] | None:
        """Wait for the next batch: requests sharing one key, oldest first.

        It is due when it is full, at once while closing, or when its oldest request has
        waited ``max_wait_s``; ``max_gather_s`` instead while company is known to be coming
        (an image that could join is being decoded, or fewer requests arrived since the last
        engine call than it answered). Waits count from the later of admission and the end
        of the last engine call. Returns ``None`` once closing and nothing is admitted; may
        return an empty list when every request taken had passed its deadline.
        """
        while True:
            if not self._waiting:
                if self._closing and self._admitted == 0:
                    return None
                if self._worked and self._admitted == 0 and self._on_idle is not None:
                    if not await self._wait_for_wakeup(self._idle_s):
                        await self._call_on_idle()
                    continue
                await self._wait_for_wakeup(None)
                continue
            first = self._waiting[0]
            since = max(first.admitted_at, self._idle_since)
            coming = self._decoding[first.key] > 0 or self._arrived < self._answered
            due_at = since + (self._max_gather_s if coming else self._max_wait_s)
            full = sum(p.key == first.key for p in self._waiting) >= self._max_batch_size
            now = time.monotonic()
            if full or self._closing or now >= due_at:
                return self._take(first.key, now)
            await self._wait_for_wakeup(due_at - now)

    async def _wait_for_wakeup(self, timeout_s: float | None) -> bool:
        """Wait for news (True) or ``timeout_s`` (False)."""
        self._wakeup.clear()
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout_s)
        except asyncio.TimeoutError:
            return False
        return True

    async def _call_on_idle(self) -> None:
        assert self._on_idle is not None  # only called when there is one
        self._worked = False
        try:
            await self.run_in_worker(self._on_idle)
        except Exception:
            logger.exception("the idle callback failed")

    def _take(self, key: tuple[int, int], now: float) -> list[_Pending]:
        """Remove up to ``max_batch_size`` requests with ``key``; drop the expired ones."""
        batch: list[_Pending] = []
        kept: deque[_Pending] = deque()
        for pending in self._waiting:
            if pending.key != key or len(batch) == self._max_batch_size:
                kept.append(pending)
                continue
            self._release()
            if now >= pending.deadline:
                self._resolve(pending, DeadlineExceededError("the request expired in the queue"))
                continue
            pending.started = True
            self._observer.queue_waited(now - pending.admitted_at)
            batch.append(pending)
        self._waiting = kept
        return batch

    async def _run_batch(self, batch: list[_Pending]) -> None:
        """Run one engine call and hand each caller its own result (or the shared failure)."""
        beam_size, max_length = batch[0].key
        started = time.monotonic()
        try:
            results = await self.run_in_worker(
                self._stack_and_caption,
                [pending.pixels for pending in batch],
                beam_size,
                max_length,
            )
            if len(results) != len(batch):
                raise RuntimeError(f"engine returned {len(results)} results for {len(batch)}")
        except Exception as exc:
            logger.exception("engine call failed for a batch of %d", len(batch))
            for pending in batch:
                self._resolve(pending, exc)
            return
        elapsed_s = time.monotonic() - started
        self._batch_s = elapsed_s if self._batch_s == 0 else 0.8 * self._batch_s + 0.2 * elapsed_s
        self._observer.batch_ran(len(batch), elapsed_s)
        for pending, captions in zip(batch, results, strict=True):
            self._resolve(pending, Captioned(captions=captions, batch_size=len(batch)))

    def _stack_and_caption(
        self, pixels: list[np.ndarray], beam_size: int, max_length: int
    ) -> list[list[Caption]]:
        """One engine call, on the model's thread: stacking the batch (a copy of a few
        MB) there too keeps it off the event loop."""
        return self._engine.caption_arrays(np.stack(pixels), beam_size, max_length)

    @staticmethod
    def _resolve(pending: _Pending, outcome: Captioned | BaseException) -> None:
        """Set a result or error, unless the caller already left (its future is done)."""
        if pending.future.done():
            return
        if isinstance(outcome, BaseException):
            pending.future.set_exception(outcome)
        else:
            pending.future.set_result(outcome)
