"""Pure ASGI middleware: the upload size cap, and per-request access logs and metrics.

Pure ASGI (not ``BaseHTTPMiddleware``) so the body streams through untouched and a
client that leaves cancels nothing it should not.
"""

from __future__ import annotations

import json
import logging
import time

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from captioner.api.errors import error_body
from captioner.api.metrics import Metrics

__all__ = ["AccessLogMiddleware", "UploadLimitMiddleware"]

access_logger = logging.getLogger("captioner.access")


class _UploadTooLarge(Exception):
    """Raised inside ``receive`` once the body passes the limit; never leaves the middleware."""


class UploadLimitMiddleware:
    """Answer 413 for a request body over ``max_bytes``, without reading it all.

    A declared ``Content-Length`` over the limit is refused before a byte of the body
    is read. A body without one (chunked) is counted as it streams and cut off at the
    limit; whatever the app was doing with it, the client gets the 413.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return

        received = 0
        exceeded = False
        refused = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _UploadTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal refused
            if not exceeded:
                await send(message)
            elif not refused:  # replace whatever the app answered to the cut-off body
                refused = True
                await self._refuse(scope, receive, send)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not refused:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault("state", {})["error_reason"] = "upload_too_large"
        body = error_body(f"the upload is larger than the limit of {self.max_bytes} bytes")
        # Connection: close, since the rest of the body is never read.
        response = JSONResponse(body, status_code=413, headers={"Connection": "close"})
        await response(scope, receive, send)


class AccessLogMiddleware:
    """One structured log line and one metrics sample per HTTP request.

    The line is JSON: method, path, route template, status, latency in ms, the batch size
    the request's captions ran in (when it had any), the rejection reason (for errors).
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app raises before answering, the server answers 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            self._record(scope, status, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, latency_s: float) -> None:
        state = scope.get("state", {})
        route = scope.get("route")
        route_path = getattr(route, "path", None) or "unmatched"
        reason = state.get("error_reason") if status >= 400 else None
        if status >= 500 and reason is None:
            reason = "internal_error"
        self.metrics.request_done(
            route=route_path,
            method=scope["method"],
            status=status,
            latency_s=latency_s,
            reason=reason,
        )
        record = {
            "method": scope["method"],
            "path": scope["path"],
            "route": route_path,
            "status": status,
            "latency_ms": round(latency_s * 1000.0, 2),
            "batch_size": state.get("batch_size"),
            "reason": reason,
            "client": (scope.get("client") or ("-",))[0],
        }
        access_logger.info(json.dumps({k: v for k, v in record.items() if v is not None}))
