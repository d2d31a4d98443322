"""``Client``: the same client without asyncio, for scripts and threads.

It runs an :class:`AsyncClient` on an event loop of its own, in a private thread, and waits
for each call there: one implementation, so both behave alike (retries, timeouts, the fleet,
``caption_many``'s concurrency). It may be shared between threads; it also works where an
event loop already runs (a notebook), since its own loop is elsewhere.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

import httpx

from captioner.client.answers import CaptionResult, ModelMetadata
from captioner.client.async_client import DEFAULT_URL, AsyncClient
from captioner.client.sources import CollectionItem, ImageInput
from captioner.results import ImageResult

__all__ = ["Client"]

T = TypeVar("T")


class Client:
    """A client of one captioner server, or of several used in turn, without asyncio.

    It takes :class:`AsyncClient`'s arguments and has its methods, each waiting for its
    answer. Use it as ``with Client(...) as client:``, or call :meth:`close`.
    """

    def __init__(
        self,
        base_url: str | Sequence[str] = DEFAULT_URL,
        *,
        api_key: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_retries: int = 5,
        backoff_s: float = 0.5,
        max_wait_s: float = 30.0,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        options = {
            "api_key": api_key,
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            "max_retries": max_retries,
            "backoff_s": backoff_s,
            "max_wait_s": max_wait_s,
            "headers": headers,
            "transport": transport,
        }
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="captioner-client", daemon=True
        )
        self._thread.start()
        self._closed = False
        # A client dropped without close() still stops its loop and thread.
        self._finalizer = weakref.finalize(self, _stop, self._loop, self._thread)
        try:
            self._async = self._wait(_make(base_url, options))
        except BaseException:
            self._finalizer()
            raise

    @property
    def base_urls(self) -> tuple[str, ...]:
        """The servers' URLs, in the order requests go to them (without credentials)."""
        return self._async.base_urls

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self.base_urls)!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections and stop the client's thread."""
        if self._closed:
            return
        self._closed = True
        try:
            self._wait(self._async.aclose())
        finally:
            self._finalizer()

    def caption(
        self, image: ImageInput, *, beam_size: int | None = None, max_length: int | None = None
    ) -> CaptionResult:
        """Caption one image; see :meth:`AsyncClient.caption`."""
        return self._call(self._async.caption(image, beam_size=beam_size, max_length=max_length))

    def metadata(self) -> ModelMetadata:
        """The model of the next server in turn; see :meth:`AsyncClient.metadata`."""
        return self._call(self._async.metadata())

    def ready(self) -> bool:
        """Whether every server is ready; never raises for a server's state."""
        return self._call(self._async.ready())

    def wait_ready(self, timeout_s: float = 60.0, interval_s: float = 0.25) -> None:
        """Wait until every server is ready; see :meth:`AsyncClient.wait_ready`."""
        self._call(self._async.wait_ready(timeout_s, interval_s))

    def caption_many(
        self,
        images: Iterable[CollectionItem],
        *,
        concurrency: int = 4,
        beam_size: int | None = None,
        max_length: int | None = None,
        ordered: bool = False,
        max_consecutive_failures: int | None = 25,
    ) -> Iterator[ImageResult]:
        """Caption a stream of images; see :meth:`AsyncClient.caption_many`.

        ``images`` is advanced on a worker thread of the client. Leaving the loop early
        (``break``, an exception) cancels the requests in flight.
        """
        self._check_open()
        results = self._async.caption_many(
            images,
            concurrency=concurrency,
            beam_size=beam_size,
            max_length=max_length,
            ordered=ordered,
            max_consecutive_failures=max_consecutive_failures,
        )
        return self._iterate(results)

    def _iterate(self, results: AsyncIterator[ImageResult]) -> Iterator[ImageResult]:
        try:
            while True:
                try:
                    yield self._wait(_step(results))
                except StopAsyncIteration:
                    return
        finally:
            if self._closed:
                pass
            elif threading.current_thread() is self._thread:  # collected on the loop's thread
                self._loop.create_task(_close(results))  # waiting here would block it for good
            else:
                self._wait(_close(results))

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coroutine.close()
        self._check_open()
        return self._wait(coroutine)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this Client is closed")

    def _wait(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # Ctrl-C while waiting: the request is cancelled too
            raise


async def _make(base_url: str | Sequence[str], options: dict[str, Any]) -> AsyncClient:
    return AsyncClient(base_url, **options)


async def _step(results: AsyncIterator[T]) -> T:
    return await results.__anext__()


async def _close(results: AsyncIterator[Any]) -> None:
    close: Any = getattr(results, "aclose", None)
    if close is not None:
        awaitable: Awaitable[None] = close()
        await awaitable


def _stop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    if loop.is_closed():
        return
    loop.call_soon_threadsafe(loop.stop)
    if thread is not threading.current_thread():
        thread.join()
        loop.close()
