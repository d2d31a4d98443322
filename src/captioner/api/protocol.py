"""Uvicorn's h11 protocol with a deadline for each part of a request and a connection cap.

Uvicorn has no timeout for a request that arrives slowly: its keep-alive timer only runs
between requests and is reset by every byte, so a client that trickles its headers or
its body a byte at a time holds a socket and its buffers for as long as it likes. ASGI
middleware cannot help with the headers, since the app only sees a request once they are
complete. So this subclass of :class:`uvicorn.protocols.http.h11_impl.H11Protocol` keeps
one timer per connection, on where the client is in its current request:

- waiting for a request's line and headers (from the connection's start, or from the
  first byte of a later request; idle time between requests is left to uvicorn's
  keep-alive timeout): ``header_timeout_s``, then 408 (a plain close if not a byte came)
  and the connection is closed;
- receiving its body: ``body_timeout_s`` plus a second's grace, then the connection is
  closed. The app's :class:`~captioner.api.middleware.UploadGuardMiddleware` answers 408
  at ``body_timeout_s`` itself while it reads the body; this timer reclaims the
  connections nobody reads from (a body sent after its answer, to a route that ignores it).

A connection beyond ``max_connections`` gets 503 and is closed before anything is read, and
a request's line and headers get 400 once more than ``max_header_bytes`` of them is
buffered without their end (h11's own bound, set from the settings rather than left at
h11's default).

The limits reach the protocol through the app's lifespan state (:data:`LIMITS_KEY`), which
uvicorn hands to every connection, so the same class works under ``captioner serve`` and
``uvicorn --factory captioner.api.app:create_app --http
captioner.api.protocol:GuardedH11Protocol``. Serving another app, it is plain h11.

The class reads uvicorn internals (the connection's ``conn``, ``cycle``, ``transport``;
the cycle's ``disconnected``, ``message_event``, ``response_complete``): :func:`guarded_protocol`
checks they are there before ``captioner serve`` uses it (see :mod:`captioner.api.internals`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle
from uvicorn.server import ServerState

from captioner.api.errors import body_timeout_message, error_body
from captioner.api.internals import Needs, missing

__all__ = ["LIMITS_KEY", "NEEDS", "ConnectionLimits", "GuardedH11Protocol", "guarded_protocol"]

logger = logging.getLogger(__name__)

LIMITS_KEY = "captioner.connection_limits"

# The app answers 408 for a stalled body at the deadline; the protocol only closes after.
_BODY_GRACE_S = 1.0


@dataclass(frozen=True)
class ConnectionLimits:
    """What :class:`GuardedH11Protocol` enforces, and where it reports.

    Attributes:
        header_timeout_s: Time for a request's line and headers.
        body_timeout_s: Time for a request's body, once its headers are in.
        max_connections: Most open connections.
        max_header_bytes: Most bytes of a request's line and headers buffered before
            their end.
        dropped: Called with the reason ("header_timeout", "body_timeout",
            "connection_limit") for each connection the server cuts off.
        open_changed: Called with the number of open connections when it changes.
    """

    header_timeout_s: float
    body_timeout_s: float
    max_connections: int
    max_header_bytes: int
    dropped: Callable[[str], None]
    open_changed: Callable[[int], None]


def _raw_answer(status: int, reason: str, message: str, extra: str = "") -> bytes:
    """A complete HTTP/1.1 answer that closes the connection, for use outside any request."""
    body = json.dumps(error_body(message)).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{extra}connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


class GuardedH11Protocol(H11Protocol):
    """h11 with header and body deadlines and a connection cap (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits: ConnectionLimits | None = app_state.get(LIMITS_KEY)
        if self._limits is not None:  # nothing has been read yet: replace h11's default
            self.conn = h11.Connection(
                h11.SERVER, max_incomplete_event_size=self._limits.max_header_bytes
            )
        self._timer: asyncio.TimerHandle | None = None
        self._phase: str | None = None  # "headers" or "body": what the timer is for
        self._answered = False  # a response was sent on this connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limits = self._limits
        if limits is None:
            return
        limits.open_changed(len(self.connections))
        if len(self.connections) > limits.max_connections:
            limits.dropped("connection_limit")
            transport.write(
                _raw_answer(
                    503,
                    "Service Unavailable",
                    f"the server has its maximum of {limits.max_connections} open connections",
                    extra="retry-after: 1\r\n",
                )
            )
            transport.close()
            return
        self._follow_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
        if self._limits is not None:
            self._limits.open_changed(len(self.connections))

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow_request()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._answered = True
        self._follow_request()

    # --- the deadline -------------------------------------------------------------------

    def _follow_request(self) -> None:
        """Point the timer at the part of the request the client owes now."""
        if self._limits is None or self.transport.is_closing():
            return
        their_state = self.conn.their_state
        if their_state is h11.IDLE and self._answered and not self.conn.trailing_data[0]:
            self._disarm()  # idle between requests: uvicorn's keep-alive timer closes it
            return
        if their_state is h11.IDLE:
            phase, seconds = "headers", self._limits.header_timeout_s
        elif their_state is h11.SEND_BODY:
            phase, seconds = "body", self._limits.body_timeout_s + _BODY_GRACE_S
        else:  # the request is in; its answer may take as long as the app needs
            self._disarm()
            return
        if phase != self._phase:
            self._disarm()
            self._phase = phase
            self._timer = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._phase = None, None

    def _expired(self) -> None:
        assert self._limits is not None  # only armed with limits
        phase, self._timer = self._phase, None
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return
        if phase == "headers":
            self._limits.dropped("header_timeout")
            started, _ = self.conn.trailing_data
            if started:  # part of a request came: say why it is cut off
                message = (
                    f"the request's headers did not arrive within "
                    f"{self._limits.header_timeout_s:g} s"
                )
                self.transport.write(_raw_answer(408, "Request Timeout", message))
        else:
            self._limits.dropped("body_timeout")
            if self.cycle is not None and not self.cycle.response_complete:
                if not self.cycle.response_started:
                    # The app's own 408 is late (a loop held up elsewhere): the client still
                    # learns why, whichever deadline fired first.
                    message = body_timeout_message(self._limits.body_timeout_s)
                    self.transport.write(_raw_answer(408, "Request Timeout", message))
                self.cycle.disconnected = True  # the app's receive() and send() now say so
                self.cycle.message_event.set()
        self.transport.close()


# What GuardedH11Protocol uses of uvicorn beyond its public API.
NEEDS = (
    Needs(
        H11Protocol,
        methods=("connection_made", "connection_lost", "data_received", "on_response_complete"),
        attributes=("conn", "cycle", "transport", "loop", "connections"),
        parameters=("config", "server_state", "app_state", "_loop"),
    ),
    Needs(
        RequestResponseCycle,
        attributes=("disconnected", "message_event", "response_started", "response_complete"),
    ),
)


def guarded_protocol() -> type[H11Protocol]:
    """:class:`GuardedH11Protocol`, or uvicorn's plain one (with a warning) if the installed
    uvicorn lacks an internal it needs: a server without these limits, said out loud, rather
    than one whose limits silently do nothing."""
    absent = missing(NEEDS)
    if not absent:
        return GuardedH11Protocol
    logger.warning(
        "this uvicorn lacks %s, which the connection guard needs: serving with uvicorn's plain "
        "h11 protocol, so header_timeout_s and max_connections do not hold (max_header_bytes, "
        "body_timeout_s and the upload limits still do); install a uvicorn that "
        "pyproject.toml allows",
        ", ".join(absent),
    )
    return H11Protocol
