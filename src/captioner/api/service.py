"""The model's life inside the server: load in the background, warm up, serve, drain, release.

The port opens at once and the model loads behind it, so orchestrators can probe
liveness while a large checkpoint downloads or loads (MAX loaded first and refused
connections meanwhile). The lifecycle::

    LOADING --(loaded, warmed up)--> READY --(drain)--> DRAINING --> STOPPED
       \\--(error)--> FAILED
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from captioner.batching import BatchObserver, Captioned, Engine, MicroBatcher
from captioner.config import Settings
from captioner.errors import CaptionerError, ModelNotReadyError
from captioner.memory import release_free_memory, release_library_pages, resident_mib

if TYPE_CHECKING:
    from captioner.engine import ModelInfo

__all__ = ["ModelService", "ModelState"]

logger = logging.getLogger(__name__)


class ModelState(enum.Enum):
    """Where the model is in its life; only READY serves captions."""

    LOADING = "loading"  # fetching, loading or warming up the model
    READY = "ready"  # serving
    DRAINING = "draining"  # finishing admitted requests, refusing new ones
    STOPPED = "stopped"  # drained; the model is released or about to be
    FAILED = "failed"  # the model could not be loaded (see load_error)


# The warm-up runs one image: tracing and TensorFlow's optimisation of each graph happen on
# its first call whatever the batch size, and are most of the warm-up; a batch size's own
# first call adds little (setting up its kernels). Running the largest batch too cost every
# start its whole call (most of a second in fp32 on two cores) and saved neither the first
# full batch's time nor memory ("Time to ready" in docs/performance.md).
_WARMUP_BATCH_SIZES = (1,)


class ModelService:
    """Owns the engine and the batcher for one app.

    Args:
        settings: Where the model is, batching and warm-up knobs.
        engine: An already loaded engine (tests, embedders); ``None`` loads the one
            ``settings`` names.
        observer: Receives batch measurements (the app's metrics).
        on_ready_changed: Called with True when serving starts, False when it stops.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine | None = None,
        observer: BatchObserver | None = None,
        on_ready_changed: Callable[[bool], None] | None = None,
    ) -> None:
        self._settings = settings
        self._engine: Engine | None = engine
        self._observer = observer
        self._on_ready_changed = on_ready_changed
        self._batcher: MicroBatcher | None = None
        self._load_task: asyncio.Task[None] | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self.state = ModelState.LOADING
        self.load_error: BaseException | None = None

    @property
    def ready(self) -> bool:
        """True when caption requests are served."""
        return self.state is ModelState.READY

    @property
    def queue_depth(self) -> int:
        """Requests admitted and not yet running (0 before the model is ready)."""
        return self._batcher.depth if self._batcher is not None else 0

    @property
    def not_ready_reason(self) -> str:
        """Why captions are refused now, for a person to read."""
        return {
            ModelState.LOADING: "the model is still loading",
            ModelState.READY: "the model is ready",
            ModelState.DRAINING: "the server is shutting down (draining)",
            ModelState.STOPPED: "the server has shut down",
            ModelState.FAILED: f"the model failed to load: {self.load_error}",
        }[self.state]

    @property
    def info(self) -> ModelInfo:
        """The loaded model's description.

        Raises:
            ModelNotReadyError: The model is not loaded (yet, or any more).
        """
        if self._engine is None or self.state in (ModelState.LOADING, ModelState.FAILED):
            raise ModelNotReadyError(self.not_ready_reason)
        return self._engine.info

    async def start(self) -> None:
        """Begin loading in the background and return at once."""
        self._load_task = asyncio.create_task(self._load(), name="captioner-model-load")

    async def wait_loaded(self) -> None:
        """Wait until loading has finished, well or badly (for tests and the CLI)."""
        if self._load_task is not None:
            await asyncio.shield(self._load_task)

    async def caption(self, image: bytes, *, beam_size: int, max_length: int) -> Captioned:
        """Caption one image (see :meth:`MicroBatcher.caption`)."""
        return await self._serving_batcher().caption(
            image, beam_size=beam_size, max_length=max_length
        )

    async def caption_many(
        self, images: Sequence[bytes], *, beam_size: int, max_length: int
    ) -> list[Captioned | CaptionerError]:
        """Caption several images, each on its own (see :meth:`MicroBatcher.caption_many`)."""
        return await self._serving_batcher().caption_many(
            images, beam_size=beam_size, max_length=max_length
        )

    async def drain(self) -> None:
        """Refuse new requests, let admitted ones finish (up to the drain timeout).

        Safe to call more than once and concurrently: later calls wait for the first.
        """
        if self._drain_task is None:
            self._drain_task = asyncio.create_task(self._drain(), name="captioner-drain")
        await asyncio.shield(self._drain_task)

    async def aclose(self) -> None:
        """Drain, then release the model (the app's shutdown)."""
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()  # a load in a thread finishes on its own; it is dropped
        await self.drain()
        self._engine = None

    # --- internals ------------------------------------------------------------------------

    def _serving_batcher(self) -> MicroBatcher:
        if self.state is not ModelState.READY or self._batcher is None:
            raise ModelNotReadyError(self.not_ready_reason)
        return self._batcher

    def _set_state(self, state: ModelState) -> None:
        self.state = state
        logger.info("model %s", state.value)
        if self._on_ready_changed is not None:
            self._on_ready_changed(state is ModelState.READY)

    async def _load(self) -> None:
        settings = self._settings
        started = time.monotonic()
        try:
            if self._engine is None:
                self._engine = await asyncio.to_thread(_load_engine, settings)
            engine = self._engine
            batcher = MicroBatcher(
                engine,
                max_batch_size=settings.max_batch_size,
                max_wait_s=settings.max_batch_wait_ms / 1000.0,
                max_gather_s=settings.max_batch_gather_ms / 1000.0,
                max_queue_size=settings.max_queue_size,
                timeout_s=settings.request_timeout_s,
                preprocess_threads=settings.preprocess_threads,
                observer=self._observer,
                on_idle=release_free_memory,  # after a burst, memory goes back to the system
            )
            # Compile on the worker thread that will run every batch.
            warmup_started = time.monotonic()
            await batcher.run_in_worker(
                engine.warmup,
                _WARMUP_BATCH_SIZES,
                settings.default_beam_size,
                settings.default_max_length,
            )
            await batcher.start()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.load_error = exc
            if isinstance(exc, CaptionerError):
                logger.error("cannot load the model: %s", exc)
            else:
                logger.exception("cannot load the model")
            self._set_state(ModelState.FAILED)
            return
        if self.state is not ModelState.LOADING:  # shut down while warming up
            await batcher.aclose(0)
            return
        self._batcher = batcher
        logger.info(
            "model %s loaded from %s, precision %s, in %.1f s (warm-up %.1f s)",
            engine.info.name,
            engine.info.checkpoint,
            engine.info.precision,
            time.monotonic() - started,
            time.monotonic() - warmup_started,
        )
        self._set_state(ModelState.READY)

    async def _drain(self) -> None:
        if self.state is ModelState.LOADING:
            self._set_state(ModelState.STOPPED)
            return
        if self.state is not ModelState.READY:
            return
        self._set_state(ModelState.DRAINING)
        assert self._batcher is not None  # READY implies a started batcher
        await self._batcher.aclose(self._settings.drain_timeout_s)
        self._set_state(ModelState.STOPPED)


def _load_engine(settings: Settings) -> Engine:
    """Fetch the model if needed and load it (blocking; runs in a thread).

    TensorFlow is imported here, not at module import, so the API imports in milliseconds.
    Before the model loads, the pages TensorFlow's import left resident are released:
    loading and warm-up bring back what serving uses (see :mod:`captioner.memory`).
    """
    from captioner.loading import load_engine
    from captioner.tf_runtime import import_tensorflow

    import_tensorflow(settings.log_level)
    before = resident_mib()
    release_library_pages()
    logger.debug("TensorFlow's start-up pages released: %.0f -> %.0f MiB", before, resident_mib())
    return load_engine(settings, download=True, progress="log")
