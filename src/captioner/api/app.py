"""``create_app``: the FastAPI app (routes, errors, middleware) around one model service.

Also an app factory for any ASGI server: ``uvicorn --factory captioner.api.app:create_app``
(settings then come from ``CAPTIONER_*`` environment variables).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from captioner.api.auth import ApiKeyMiddleware, load_api_keys
from captioner.api.errors import install_error_handlers
from captioner.api.metrics import Metrics
from captioner.api.middleware import AccessLogMiddleware, UploadBudget, UploadGuardMiddleware
from captioner.api.openapi import install_openapi
from captioner.api.protocol import LIMITS_KEY, ConnectionLimits
from captioner.api.routes import docs, health, limits, metrics, model, web
from captioner.api.service import ModelService
from captioner.api.uploads import batch_limit, image_limit
from captioner.batching import Engine
from captioner.config import Settings, load_settings

__all__ = ["create_app"]

_DESCRIPTION = (
    "Captions images with the Show and Tell (im2txt) model. The `/model/*` routes keep the "
    "IBM MAX Image Caption Generator contract; MAX's Swagger 2.0 document is at "
    '`/swagger.json`.\n\nEvery error is JSON, `{"status": "error", "message": ...}`: '
    "404 for an unknown path, 405 (with `Allow`) for a method a path does not take, 413 for "
    "any request body over the upload limit, 503 + `Retry-After` when the upload memory "
    "budget is full, and 408 (then the connection is closed) for a request whose headers "
    "or body arrive too slowly."
)


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """Build the caption server.

    Nothing is loaded here: the lifespan loads the model in the background (the port
    answers meanwhile, readiness says 503) and drains and releases it at shutdown.

    Args:
        settings: Every knob; ``None`` reads them from the environment.
        engine: An already loaded engine to serve instead of loading one (tests,
            embedding); it is warmed up like a loaded one.

    Returns:
        The ASGI app; its ``state`` holds ``settings``, ``service`` and ``metrics``.
    """
    settings = settings if settings is not None else load_settings()
    # Read now: a missing or empty key file stops the start, before any model work.
    api_keys = load_api_keys(settings.api_keys_file) if settings.api_keys_file else None
    app_metrics = Metrics()

    def ready_changed(ready: bool) -> None:
        app_metrics.model_ready.set(ready)
        if ready:
            app_metrics.model_loaded(service.info.name, service.info.precision)

    service = ModelService(
        settings, engine=engine, observer=app_metrics, on_ready_changed=ready_changed
    )

    connection_limits = ConnectionLimits(
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        max_connections=settings.max_connections,
        max_header_bytes=settings.max_header_bytes,
        dropped=app_metrics.connection_dropped,
        open_changed=app_metrics.open_connections.set,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        await service.start()
        try:
            # Lifespan state: the server hands it to each connection (captioner.api.protocol).
            yield {LIMITS_KEY: connection_limits}
        finally:
            await service.aclose()

    app = FastAPI(
        title="captioner",
        version=version("captioner"),
        description=_DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # ours (routes/docs.py) is served offline; FastAPI's loads from a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.service = service
    app.state.metrics = app_metrics
    install_error_handlers(app)
    install_openapi(app, settings)
    routers = (model.router, health.router, limits.router, metrics.router, docs.router, web.router)
    for router in routers:
        app.include_router(router)
    # What the access log matches requests answered before routing against (a 413 from the
    # upload guard still names its route): every included route, then the app's own (a
    # live list: routes mounted later count too).
    included = [route for router in routers for route in router.routes]

    single, batch = image_limit(settings), batch_limit(settings)
    batch_path = model.router.url_path_for("predict_batch")
    # Added innermost first: the access log sees every answer, CORS headers reach the 413s
    # and 401s (and CORS answers preflights, which carry no key).
    app.add_middleware(
        UploadGuardMiddleware,
        limit=lambda path: batch if path == batch_path else single,
        body_timeout_s=settings.body_timeout_s,
        budget=UploadBudget(settings.max_pending_upload_bytes, app_metrics.upload_bytes_held.set),
    )
    if api_keys is not None:  # outside the upload guard: no body is read without a key
        app.add_middleware(ApiKeyMiddleware, keys=api_keys, public_metrics=settings.public_metrics)
    if settings.cors_enable or settings.cors_origins:
        _add_cors(app, settings)
    app.add_middleware(
        AccessLogMiddleware, metrics=app_metrics, routes=lambda: [*included, *app.routes]
    )
    return app


def _add_cors(app: FastAPI, settings: Settings) -> None:
    """MAX's ``CORS_ENABLE=true`` echoes any origin; ``cors_origins`` allows only those listed."""
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    else:
        app.add_middleware(
            CORSMiddleware, allow_origin_regex=".*", allow_methods=["*"], allow_headers=["*"]
        )
