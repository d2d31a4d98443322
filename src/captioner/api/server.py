"""Run the app under uvicorn, with a drain on the first SIGTERM/SIGINT.

Plain uvicorn closes the listening socket at once on SIGTERM. Here the first signal only
starts a drain: readiness turns 503 (a load balancer stops sending), new caption requests
get 503, admitted ones finish (up to ``drain_timeout_s``); then uvicorn shuts down as
usual, cutting off after ``shutdown_timeout_s`` what is still open (a stalled upload), so
a stop never takes longer than the two together. A second signal shuts down at once.

Connections are served by :class:`~captioner.api.protocol.GuardedH11Protocol`: deadlines
for slow requests and a cap on open connections.

Both build on uvicorn internals (``Server.on_tick``, ``handle_exit``, ``should_exit``); if
the installed uvicorn lacks one, the server says so and runs as plain uvicorn (whose
lifespan shutdown still drains) rather than crash or silently skip the drain.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
from types import FrameType

import uvicorn

from captioner.api.app import create_app
from captioner.api.internals import Needs, missing
from captioner.api.logs import configure_logging
from captioner.api.protocol import guarded_protocol
from captioner.api.service import ModelService, ModelState
from captioner.config import Settings
from captioner.errors import StartupError

__all__ = ["NEEDS", "open_listener", "serve"]

logger = logging.getLogger(__name__)


class _DrainingServer(uvicorn.Server):
    """A uvicorn server that drains the model service before it stops listening."""

    def __init__(self, config: uvicorn.Config, service: ModelService) -> None:
        super().__init__(config)
        self._service = service
        self._drain_requested = False
        self._drain_task: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs in the signal handler: only set a flag, on_tick (every 0.1 s) acts on it.
        if not self._drain_requested and not self.should_exit:
            logger.info("signal %d: draining before shutdown (repeat it to stop at once)", sig)
            self._drain_requested = True
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._drain_requested and self._drain_task is None:
            self._drain_task = asyncio.create_task(self._service.drain())
        if self._drain_task is not None and self._drain_task.done():
            self.should_exit = True
        if self._service.state is ModelState.FAILED:
            self.should_exit = True  # a server that can never be ready should not linger
        return await super().on_tick(counter)


# What _DrainingServer uses of uvicorn beyond its public API.
NEEDS = (
    Needs(
        uvicorn.Server,
        methods=("handle_exit", "on_tick"),
        attributes=("should_exit",),
        parameters=("config",),
    ),
)


def _server(config: uvicorn.Config, service: ModelService) -> uvicorn.Server:
    """The draining server, or plain uvicorn (with a warning) if uvicorn lacks what it needs."""
    absent = missing(NEEDS)
    if not absent:
        return _DrainingServer(config, service)
    logger.warning(
        "this uvicorn lacks %s, which the drain on SIGTERM needs: readiness stays up until "
        "uvicorn stops listening (admitted requests still finish, in the lifespan's "
        "shutdown); install a uvicorn that pyproject.toml allows",
        ", ".join(absent),
    )
    return uvicorn.Server(config)


def open_listener(host: str, port: int) -> socket.socket:
    """Bind and listen on ``host:port`` now, so a taken port is reported before any model work.

    Connections that arrive before the server runs wait in the listen backlog.

    Raises:
        StartupError: the port is taken, the address is not this machine's, or the host
            name does not resolve.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        message = f"cannot listen on {host}:{port}: unknown host ({exc.strerror})"
        raise StartupError(message) from exc
    family, kind, proto, _, address = infos[0]
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(2048)
    except OSError as exc:
        listener.close()
        hint = ""
        if exc.errno == errno.EADDRINUSE:
            hint = "; another process uses it: choose another port with --port (CAPTIONER_PORT)"
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}") from exc
    return listener


def _reach(host: str, settings: Settings) -> str:
    """Who can use the server, for the start line: the address's reach, and keys or none."""
    where = ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:  # an IPv6 address with a scope
        loopback = False
    if loopback:
        where = ", from this machine only (--host 0.0.0.0 serves other machines)"
    if settings.api_keys_file is None:
        return f"{where}, no API key needed (--api-key-file requires one)"
    return f"{where}, API keys required (from {settings.api_keys_file})"


def serve(settings: Settings, listener: socket.socket | None = None) -> None:
    """Serve the caption API on ``listener`` (default: ``settings.host:settings.port``).

    Runs until signalled.

    Raises:
        StartupError: the port cannot be listened on, or the model could not be loaded (after
            the server has stopped; the reason is logged).
    """
    configure_logging(settings.log_level)
    if listener is None:
        listener = open_listener(settings.host, settings.port)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # the app logs one richer line per request
        http=guarded_protocol(),
        h11_max_incomplete_event_size=settings.max_header_bytes,
        ws="none",  # no WebSocket routes: an upgrade request is answered as plain HTTP
        lifespan="on",
        # After the drain: a stop takes at most drain_timeout_s + shutdown_timeout_s.
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
    )
    service: ModelService = app.state.service
    host, port = listener.getsockname()[:2]
    logger.info(
        "listening on http://%s:%d (the web page at /, the API documentation at /docs)%s; "
        "the model loads in the background, /v2/health/ready says when it is ready",
        f"[{host}]" if ":" in host else host,
        port,
        _reach(host, settings),
    )
    _server(config, service).run(sockets=[listener])
    if service.load_error is not None:
        # The service has logged the whole reason (with the ways out) once already.
        raise StartupError("the model could not be loaded (the reason is above)") from (
            service.load_error
        )
