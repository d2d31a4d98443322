"""Run the app under uvicorn, with a drain on the first SIGTERM/SIGINT.

Plain uvicorn closes the listening socket at once on SIGTERM. Here the first signal only
starts a drain: readiness turns 503 (a load balancer stops sending), new caption requests
get 503, admitted ones finish (up to ``drain_timeout_s``); then uvicorn shuts down as
usual. A second signal shuts down at once.

Connections are served by :class:`~captioner.api.protocol.GuardedH11Protocol`: deadlines
for slow requests and a cap on open connections.
"""

from __future__ import annotations

import asyncio
import logging
from types import FrameType

import uvicorn

from captioner.api.app import create_app
from captioner.api.logs import configure_logging
from captioner.api.protocol import GuardedH11Protocol
from captioner.api.service import ModelService, ModelState
from captioner.config import Settings

__all__ = ["serve"]

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


def serve(settings: Settings) -> None:
    """Serve the caption API on ``settings.host:settings.port`` until signalled.

    Raises:
        CaptionerError: The model could not be loaded (after the server has stopped).
    """
    configure_logging(settings.log_level)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # the app logs one richer line per request
        http=GuardedH11Protocol,
        ws="none",  # no WebSocket routes: an upgrade request is answered as plain HTTP
        lifespan="on",
        timeout_graceful_shutdown=max(1, round(settings.drain_timeout_s)),
    )
    service: ModelService = app.state.service
    _DrainingServer(config, service).run()
    if service.load_error is not None:
        raise service.load_error
