"""Pure ASGI middleware: the guard on request bodies, and per-request access logs and metrics.

Pure ASGI (not ``BaseHTTPMiddleware``) so the body streams through untouched and a
client that leaves cancels nothing it should not.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from captioner.api.errors import INTERNAL_ERROR, body_timeout_message, error_body
from captioner.api.metrics import Metrics

__all__ = [
    "REQUEST_ID_HEADER",
    "AccessLogMiddleware",
    "BodyLimit",
    "UploadBudget",
    "UploadGuardMiddleware",
    "format_bytes",
]

access_logger = logging.getLogger("captioner.access")

REQUEST_ID_HEADER = "X-Request-ID"
# An incoming id is echoed only if it is this plain (no spaces, quotes or control characters
# to spoil a log line or a header); any other gets a fresh one.
_WELL_FORMED_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")

# Uploads are released as their requests are answered, a second or a few under load.
_BUDGET_RETRY_AFTER_S = 2


class UploadBudget:
    """The request-body bytes admitted and not yet released, against a capacity.

    Used from the event loop only, so it needs no lock.
    """

    def __init__(self, capacity: int, on_change: Callable[[int], None] | None = None) -> None:
        self.capacity = capacity
        self.reserved = 0
        self._on_change = on_change

    def try_reserve(self, size: int) -> bool:
        """Reserve ``size`` bytes if they fit; False (nothing reserved) if not."""
        if self.reserved + size > self.capacity:
            return False
        self._set(self.reserved + size)
        return True

    def release(self, size: int) -> None:
        """Give back a reservation."""
        self._set(self.reserved - size)

    def _set(self, reserved: int) -> None:
        self.reserved = reserved
        if self._on_change is not None:
            self._on_change(reserved)


class _Refused(Exception):
    """Raised inside ``receive`` to stop the app reading a body it must not get."""


@dataclass(frozen=True)
class _Refusal:
    """An answer given instead of the app's: status, metrics reason, message, headers."""

    status: int
    reason: str
    message: str
    retry_after_s: int | None = None
    # Closing at once with a body still coming makes the client's kernel see a reset, and
    # most clients then report that instead of the answer. So a refusal for size or memory
    # leaves the connection open: the server reads the rest of the body and discards it
    # (holding none of it; the body deadline still applies). A too slow body is cut off.
    close: bool = True

    async def send(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault("state", {})["error_reason"] = self.reason
        headers = {"Connection": "close"} if self.close else {}
        if self.retry_after_s is not None:
            headers["Retry-After"] = str(self.retry_after_s)
        response = JSONResponse(error_body(self.message), self.status, headers=headers)
        await response(scope, receive, send)


@dataclass(frozen=True)
class BodyLimit:
    """The most bytes a request body may have, and the words of its 413: what the body is
    (``the upload``), the limit's scope (``for one image``), what to send instead and the
    setting that raises it."""

    max_bytes: int
    what: str
    scope: str
    instead: str
    setting: str

    def message(self) -> str:
        """The 413's message: which limit was hit, and the two ways past it."""
        return (
            f"{self.what} is larger than the limit of {format_bytes(self.max_bytes)} "
            f"{self.scope}: {self.instead}, or raise the "
            f"server's {self.setting} (CAPTIONER_{self.setting.upper()})"
        )

    def refusal(self) -> _Refusal:
        return _Refusal(413, "upload_too_large", self.message(), close=False)


def format_bytes(size: int) -> str:
    """A byte count exact and as people read it: ``10,485,760 bytes (10 MiB)``."""
    exact = f"{size:,} bytes"
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return exact if unit == "bytes" else f"{exact} ({value:.3g} {unit})"
        value /= 1024
    raise AssertionError("unreachable")


class UploadGuardMiddleware:
    """Guard request bodies: their size (413), their pace (408) and their memory (503).

    - A declared ``Content-Length`` over the request's limit (``limit``) is refused before
      a byte of the body is read; a body without one (chunked) is counted as it streams and
      cut off there.
    - A body not complete ``body_timeout_s`` after the request reached the app is cut off
      (a total deadline, so trickling bytes does not extend it).
    - Every body reserves its declared size (its limit when undeclared) in ``budget``
      until its request is answered; one that does not fit is refused at once.

    Whatever the app was doing with a cut-off body, the client gets the refusal.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: Callable[[str], BodyLimit],
        body_timeout_s: float,
        budget: UploadBudget,
    ) -> None:
        self.app = app
        self.limit = limit
        self.body_timeout_s = body_timeout_s
        self.budget = budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope["path"])
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        size = int(declared) if declared is not None and declared.isdigit() else None
        if size is not None and size > limit.max_bytes:
            await limit.refusal().send(scope, receive, send)
            return
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        reservation = size if size is not None else (limit.max_bytes if chunked else 0)
        if reservation and not self.budget.try_reserve(reservation):
            await self._busy().send(scope, receive, send)
            return
        try:
            await self._guarded(scope, receive, send, limit)
        finally:
            if reservation:
                self.budget.release(reservation)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, limit: BodyLimit) -> None:
        deadline = asyncio.get_running_loop().time() + self.body_timeout_s
        received = 0
        body_done = False
        refusal: _Refusal | None = None
        refused = False

        async def guarded_receive() -> Message:
            nonlocal received, body_done, refusal
            if body_done:  # later calls wait for a disconnect: no deadline for those
                return await receive()
            remaining_s = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), max(remaining_s, 0.0))
            except asyncio.TimeoutError:
                refusal = self._too_slow()
                raise _Refused from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > limit.max_bytes:
                    refusal = limit.refusal()
                    raise _Refused
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal refused
            if refusal is None:
                await send(message)
            elif not refused:  # replace whatever the app answered to the cut-off body
                refused = True
                await refusal.send(scope, receive, send)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if refusal is None:
                raise
        if refusal is not None and not refused:
            await refusal.send(scope, receive, send)

    def _too_slow(self) -> _Refusal:
        return _Refusal(408, "body_timeout", body_timeout_message(self.body_timeout_s))

    @staticmethod
    def _busy() -> _Refusal:
        message = "the server holds as many uploads as its memory budget allows; retry later"
        return _Refusal(503, "upload_budget", message, _BUDGET_RETRY_AFTER_S, close=False)


class AccessLogMiddleware:
    """One structured log line, one metrics sample and one request id per HTTP request.

    The line is JSON: method, path, route template, status, latency in ms, the batch size
    the request's captions ran in (when it had any), the rejection reason (for errors), the
    request id. The id is the request's own ``X-Request-ID`` when well formed, else a new
    one; every answer carries it back in ``X-Request-ID`` (and ``scope["state"]`` holds it).

    The route label is the template of the route that served the request: FastAPI's routes
    name themselves when they run; a request answered before routing (a 413 from the
    upload guard) and the others (mounted static files) are matched against ``routes``
    here. A path no route matches is "unmatched", so clients cannot grow the label set.
    """

    def __init__(
        self, app: ASGIApp, metrics: Metrics, routes: Callable[[], Sequence[BaseRoute]]
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(Headers(scope=scope).get(REQUEST_ID_HEADER))
        scope.setdefault("state", {})["request_id"] = request_id
        request_scope = dict(scope)  # the router rewrites some keys of the one it is given
        status = 500  # if the app raises before answering, the server answers 500
        answered = False

        async def recording_send(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = message["status"], True
                header = (REQUEST_ID_HEADER.lower().encode(), request_id.encode())
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        except Exception:
            if not answered:  # the same 500 Starlette's outer handler gives, with the id
                await JSONResponse(error_body(INTERNAL_ERROR), 500)(scope, receive, recording_send)
            raise  # still logged by the server, with its traceback
        finally:
            route = self._route_label(scope, request_scope)
            self._record(scope, route, status, time.perf_counter() - started)

    def _route_label(self, scope: Scope, request_scope: Scope) -> str:
        route = scope.get("route")
        if route is not None:
            return str(route.path)
        for candidate in self.routes():
            template = getattr(candidate, "path_format", None)
            if template is not None and candidate.matches(request_scope)[0] is not Match.NONE:
                return str(template)
        return "unmatched"

    def _record(self, scope: Scope, route: str, status: int, latency_s: float) -> None:
        state = scope.get("state", {})
        reason = state.get("error_reason") if status >= 400 else None
        if status >= 500 and reason is None:
            reason = "internal_error"
        self.metrics.request_done(
            route=route,
            method=scope["method"],
            status=status,
            latency_s=latency_s,
            reason=reason,
        )
        record = {
            "method": scope["method"],
            "path": scope["path"],
            "route": route,
            "status": status,
            "latency_ms": round(latency_s * 1000.0, 2),
            "batch_size": state.get("batch_size"),
            "reason": reason,
            "client": (scope.get("client") or ("-",))[0],
            "request_id": state.get("request_id"),
        }
        access_logger.info(json.dumps({k: v for k, v in record.items() if v is not None}))


def _request_id(incoming: str | None) -> str:
    """The client's id when it is well formed, else a new random one (32 hex digits)."""
    if incoming is not None and _WELL_FORMED_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex
