"""``AsyncClient``: captioner's HTTP API from asyncio, with retries, timeouts and a fleet.

Every request goes to the next base URL in turn (round-robin); a retry goes to the one after
the server that failed. See :mod:`captioner.client.retry` for the waits and
:mod:`captioner.client.errors` for what is raised.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx

from captioner.client.answers import (
    RETRYABLE_STATUSES,
    CaptionResult,
    ModelMetadata,
    error_for,
    read_captions,
    read_metadata,
)
from captioner.client.errors import (
    BadImageError,
    ClientError,
    ErrorContext,
    ImageTooLargeError,
    NotReadyError,
    ServerConnectionError,
    ServerError,
    ServerOverloadedError,
    ServerTimeoutError,
    ServerUnavailableError,
)
from captioner.client.retry import RetryPolicy, parse_retry_after
from captioner.client.sources import (
    CollectionItem,
    ImageInput,
    Source,
    collection_source,
    image_source,
)
from captioner.results import ImageResult

__all__ = ["DEFAULT_URL", "REQUEST_ID_HEADER", "AsyncClient"]

logger = logging.getLogger("captioner.client")

DEFAULT_URL = "http://localhost:5000"
REQUEST_ID_HEADER = "X-Request-ID"
# The transport failures worth another try: the request never reached the model, or its
# answer never came back, and captioning is idempotent.
_CONNECTION_ERRORS = (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError)
_END = object()
T = TypeVar("T")


class AsyncClient:
    """A client of one captioner server, or of several used in turn.

    Args:
        base_url: the server's URL (``http://host:5000``, or with a path prefix behind a
            proxy), or a list of them: requests go to each in turn.
        api_key: sent as ``Authorization: Bearer <key>``; never logged or shown.
        connect_timeout: seconds to wait for a connection.
        read_timeout: seconds to wait for the answer once the request is sent (between
            two reads; also the limit for sending the upload).
        max_retries: retries after the first try, for overload (503, 429), server failures
            (500, 502, 504) and connection failures. Other 4xx and timeouts are never retried.
        backoff_s: the first wait when the server gives no ``Retry-After``; it doubles.
        max_wait_s: the longest any one wait, a server's ``Retry-After`` included.
        headers: more headers for every request.
        transport: an httpx transport instead of the network (``httpx.ASGITransport(app)``
            to talk to an app in the same process; a mock in tests).

    Use it as ``async with AsyncClient(...) as client:``, or call :meth:`aclose`. One
    client serves any number of concurrent calls, within one event loop.
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
        self._bases = _base_urls(base_url)
        self._shown = [_without_credentials(base) for base in self._bases]
        self.retry = RetryPolicy(
            max_retries=max_retries, backoff_s=backoff_s, max_wait_s=max_wait_s
        )
        sent = dict(headers or {})
        if api_key is not None:
            sent["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.AsyncClient(
            headers=sent,
            timeout=httpx.Timeout(
                connect=connect_timeout, read=read_timeout, write=read_timeout, pool=None
            ),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
            transport=transport,
        )
        self._turn = itertools.count()
        self._models: dict[str, ModelMetadata | None] = {}

    @property
    def base_urls(self) -> tuple[str, ...]:
        """The servers' URLs, in the order requests go to them (without credentials)."""
        return tuple(self._shown)

    def __repr__(self) -> str:  # never the key or the headers
        return f"{type(self).__name__}({list(self._shown)!r})"

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    # --- one image --------------------------------------------------------------------------

    async def caption(
        self, image: ImageInput, *, beam_size: int | None = None, max_length: int | None = None
    ) -> CaptionResult:
        """Caption one image: a path, bytes or a binary file object.

        Args:
            image: the image; a file is read whole first (so that a retry can resend it).
            beam_size: captions wanted (the server's beam width); None: the server's default.
            max_length: the longest caption in tokens, ``<S>`` and ``</S>`` included; None:
                the server's default.

        Returns:
            The ranked captions, the request id, the server that answered and its model.

        Raises:
            BadImageError, ImageTooLargeError: the server refused the image (its message).
            InvalidParameterError: ``beam_size`` or ``max_length`` out of the server's bounds.
            ServerUnavailableError: overloaded, not ready, failing or unreachable on every
                try, or no answer within ``read_timeout``.
            ClientError: any other refusal (``AuthenticationError``, ...).
            OSError: the file could not be read.
        """
        source = image_source(image)
        data = await self._read(source)
        return await self._caption(source, data, _params(beam_size, max_length), with_model=True)

    async def metadata(self) -> ModelMetadata:
        """The model of the next server in turn (``GET /model/metadata``), with retries."""
        response, _, request_id = await self._request("GET", "/model/metadata")
        return read_metadata(response, {"request_id": request_id, "url": str(response.url)})

    async def ready(self) -> bool:
        """Whether every server answers its readiness probe with 200 (``/v2/health/ready``).

        Never raises for a server's state: one that is loading, draining, unreachable or
        not a captioner server makes it False. One try each, with the client's timeouts.
        """
        answers = await asyncio.gather(*(self._ready(base) for base in self._bases))
        return all(ready for ready, _ in answers)

    async def wait_ready(self, timeout_s: float = 60.0, interval_s: float = 0.25) -> None:
        """Poll :meth:`ready` until every server is ready.

        Raises:
            NotReadyError: a server was still not ready after ``timeout_s`` (why, if it said).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            answers = await asyncio.gather(*(self._ready(base) for base in self._bases))
            states = zip(self._shown, answers, strict=True)
            waiting = [(base, why) for base, (ready, why) in states if not ready]
            if not waiting:
                return
            if loop.time() >= deadline:
                base, why = waiting[0]
                raise NotReadyError(f"{base} not ready after {timeout_s:g} s: {why}", url=base)
            await asyncio.sleep(interval_s)

    # --- a collection -----------------------------------------------------------------------

    async def caption_many(
        self,
        images: Iterable[CollectionItem] | AsyncIterable[CollectionItem],
        *,
        concurrency: int = 4,
        beam_size: int | None = None,
        max_length: int | None = None,
        ordered: bool = False,
        max_consecutive_failures: int | None = 25,
    ) -> AsyncIterator[ImageResult]:
        """Caption a stream of images, ``concurrency`` requests at a time.

        ``images`` is consumed lazily: at most ``2 * concurrency`` images are taken ahead
        of the results given back (read from disk while the requests run), so a listing of
        a million paths is never held. Each result carries its source: the path as given,
        or the name of a ``(name, bytes)`` pair.

        An image fails alone, as an :class:`ImageResult` with ``error`` set: the server's
        message when it refused the image (400, 413), the reason when its file cannot be
        read, or the last reason when the server stayed overloaded, failing or unreachable
        through every retry. Errors that every image would get instead end the run,
        raised: ``InvalidParameterError``, ``AuthenticationError``, ``RequestRejectedError``
        (404: a wrong URL). So does a server that is gone: after
        ``max_consecutive_failures`` images in a row failed for the server's reasons
        (None: never), the last such error is raised. Images in flight then are not
        yielded; a rerun must send them again.

        Args:
            images: paths (``str`` or path-like) or ``(name, bytes)`` pairs; an iterable
                (read on a worker thread) or an async iterable.
            concurrency: requests in flight at once (with several servers, in all).
            beam_size, max_length: as in :meth:`caption`.
            ordered: yield in input order (a slow image holds back those after it) instead
                of as each completes.
            max_consecutive_failures: see above.

        Yields:
            One :class:`ImageResult` per image.
        """
        if concurrency < 1:
            raise ValueError(f"concurrency must be 1 or more, got {concurrency}")
        if max_consecutive_failures is not None and max_consecutive_failures < 1:
            raise ValueError("max_consecutive_failures must be 1 or more, or None")
        params = _params(beam_size, max_length)
        sending = asyncio.Semaphore(concurrency)
        window = 2 * concurrency
        items = _aiter(images)
        taking: asyncio.Future[Any] | None = None
        running: deque[asyncio.Task[tuple[ImageResult, ServerUnavailableError | None]]] = deque()
        exhausted = False
        failures = 0
        try:
            while True:
                if taking is None and not exhausted and len(running) < window:
                    taking = asyncio.ensure_future(_next(items))
                # Ordered, only the oldest can be given back next: waiting on any other
                # would wake at once, again and again, while that one finishes (every task
                # left in ``running`` here is unfinished, or it would have been given back).
                awaited = [running[0]] if ordered and running else running
                waiting: set[asyncio.Future[Any]] = {*awaited, *([taking] if taking else [])}
                if not waiting:
                    return
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if taking is not None and taking in done:
                    item, taking = taking.result(), None
                    if item is _END:
                        exhausted = True
                    else:
                        source = collection_source(item)
                        running.append(asyncio.ensure_future(self._one(source, params, sending)))
                while task := _next_done(running, ordered):
                    running.remove(task)
                    result, unavailable = task.result()
                    failures = failures + 1 if unavailable is not None else 0
                    if unavailable is not None and failures == max_consecutive_failures:
                        raise unavailable
                    yield result
        finally:
            pending = [*running, *([taking] if taking else [])]
            for future in pending:
                future.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if hasattr(items, "aclose"):
                await items.aclose()

    async def _one(
        self, source: Source, params: dict[str, int], sending: asyncio.Semaphore
    ) -> tuple[ImageResult, ServerUnavailableError | None]:
        """One image of a collection: its result, and the server's failure if that was why."""
        try:
            data = await self._read(source)
        except OSError as exc:
            return ImageResult(source.name, error=exc.strerror or str(exc)), None
        async with sending:
            try:
                captioned = await self._caption(source, data, params, with_model=False)
            except (BadImageError, ImageTooLargeError) as exc:
                return ImageResult(source.name, error=exc.message), None
            except ServerUnavailableError as exc:
                return ImageResult(source.name, error=exc.message), exc
        return captioned.to_image_result(source.name), None

    # --- the requests -----------------------------------------------------------------------

    async def _read(self, source: Source) -> bytes:
        return await asyncio.to_thread(source.read) if source.blocking else source.read()

    async def _caption(
        self, source: Source, data: bytes, params: dict[str, int], *, with_model: bool
    ) -> CaptionResult:
        files = {"image": (source.filename, data, "application/octet-stream")}
        response, base, request_id = await self._request(
            "POST", "/model/predict", files=files, params=params
        )
        captions = read_captions(response, {"request_id": request_id, "url": str(response.url)})
        model = await self._model(base) if with_model else None
        shown = self._shown[self._bases.index(base)]
        return CaptionResult(captions=captions, request_id=request_id, server=shown, model=model)

    async def _model(self, base: str) -> ModelMetadata | None:
        """The server's metadata, asked once per server (one try; None if it cannot say)."""
        if base not in self._models:
            try:
                response = await self._http.get(f"{base}/model/metadata")
            except httpx.HTTPError:
                return None  # asked again next time
            if response.status_code in RETRYABLE_STATUSES:
                return None
            try:
                model = read_metadata(response) if response.is_success else None
            except ServerError:
                model = None
            self._models[base] = model
        return self._models[base]

    async def _ready(self, base: str) -> tuple[bool, str]:
        """One readiness probe: (ready, why not)."""
        try:
            response = await self._http.get(f"{base}/v2/health/ready")
        except httpx.HTTPError as exc:
            return False, _describe(exc)
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code == 200 and isinstance(body, dict) and body.get("ready") is True:
            return True, ""
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            return False, body["message"]
        return False, f"HTTP {response.status_code}"

    async def _request(
        self, method: str, path: str, **kwargs: Any
    ) -> tuple[httpx.Response, str, str]:
        """Send with retries; returns the 2xx answer, the base URL that gave it, the request id.

        The request id is the client's own, sent on every try, or the server's echo of it.
        """
        request_id = uuid.uuid4().hex
        headers = {REQUEST_ID_HEADER: request_id}
        index = next(self._turn) % len(self._bases)
        attempt = 0
        while True:
            attempt += 1
            base, shown = self._bases[index], self._shown[index]
            url = f"{base}{path}"
            fields: ErrorContext = {
                "request_id": request_id,
                "url": f"{shown}{path}",
                "attempts": attempt,
            }
            retry_after_s: float | None = None
            try:
                response = await self._http.request(method, url, headers=headers, **kwargs)
            except httpx.ConnectTimeout as exc:
                failure: ClientError = ServerConnectionError(
                    f"no connection to {shown} within the connect timeout", **fields
                )
                cause: BaseException | None = exc
            except httpx.TimeoutException as exc:
                raise ServerTimeoutError(
                    f"no answer from {shown} within the read timeout", **fields
                ) from exc
            except _CONNECTION_ERRORS as exc:
                failure, cause = ServerConnectionError(_describe(exc, shown), **fields), exc
            except httpx.HTTPError as exc:  # an invalid header value, an unsupported URL
                raise ClientError(f"{shown}: {_describe(exc)}", **fields) from exc
            else:
                request_id = response.headers.get(REQUEST_ID_HEADER, request_id)
                fields["request_id"] = request_id
                if response.is_success:
                    return response, base, request_id
                failure = error_for(response, fields)
                if response.status_code not in RETRYABLE_STATUSES:
                    raise failure
                retry_after_s = parse_retry_after(response.headers.get("Retry-After"))
                cause = None  # the answer says it all
            if attempt > self.retry.max_retries:
                raise (await self._gave_up(failure, base)) from cause
            if isinstance(failure, ServerConnectionError) and attempt < len(self._bases):
                wait_s = 0.0  # another server may answer at once
            else:
                wait_s = self.retry.wait_s(attempt, retry_after_s)
            logger.debug(
                "%s %s%s: %s; try %d of %d in %.2f s",
                method, shown, path, failure.message, attempt + 1,
                self.retry.max_retries + 1, wait_s,
            )  # fmt: skip
            index = (index + 1) % len(self._bases)
            await asyncio.sleep(wait_s)

    async def _gave_up(self, failure: ClientError, base: str) -> ClientError:
        """The error to raise when the retries are spent: a 503 from a server that says it
        is not ready is a :class:`NotReadyError`."""
        fields: ErrorContext = {
            "status": failure.status,
            "request_id": failure.request_id,
            "url": failure.url,
            "attempts": failure.attempts,
        }
        tries = f"(gave up after {failure.attempts} tries)"
        if isinstance(failure, ServerOverloadedError) and failure.status == 503:
            ready, why = await self._ready(base)
            if not ready and why and not why.startswith("HTTP "):
                return NotReadyError(f"{failure.message} {tries}; the server: {why}", **fields)
        if failure.attempts > 1:
            return type(failure)(f"{failure.message} {tries}", **fields)
        return failure


def _base_urls(base_url: str | Sequence[str]) -> list[str]:
    urls = [base_url] if isinstance(base_url, str) else list(base_url)
    if not urls:
        raise ValueError("base_url: give at least one server URL")
    checked = []
    for url in urls:
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"base_url: {url!r} is not an http:// or https:// URL")
        checked.append(str(parsed.copy_with(query=None, fragment=None)).rstrip("/"))
    return checked


def _without_credentials(base: str) -> str:
    parsed = httpx.URL(base)
    if parsed.userinfo:
        return str(parsed.copy_with(username=None, password=None)).rstrip("/")
    return base


def _params(beam_size: int | None, max_length: int | None) -> dict[str, int]:
    chosen = {"beam_size": beam_size, "max_length": max_length}
    return {name: value for name, value in chosen.items() if value is not None}


def _describe(exc: BaseException, shown: str | None = None) -> str:
    text = str(exc) or type(exc).__name__
    return f"no connection to {shown}: {text}" if shown else text


async def _next(items: AsyncIterator[T]) -> T | object:
    return await anext(items, _END)


async def _aiter(images: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[T]:
    """The images as an async iterator; a plain iterator is advanced on a worker thread
    (a directory walk or a pipe must not block the event loop), a list or tuple in place."""
    if isinstance(images, AsyncIterable):
        async for item in images:
            yield item
    elif isinstance(images, (list, tuple)):
        for item in images:
            yield item
    else:
        iterator = iter(images)
        while True:
            item = await asyncio.to_thread(_take, iterator)
            if item is _END:
                return
            yield item


def _take(iterator: Iterator[Any]) -> Any:
    return next(iterator, _END)


def _next_done(running: deque[asyncio.Task[T]], ordered: bool) -> asyncio.Task[T] | None:
    """The next finished task to give back: the oldest if ``ordered``, else any (oldest first)."""
    if ordered:
        return running[0] if running and running[0].done() else None
    return next((task for task in running if task.done()), None)
