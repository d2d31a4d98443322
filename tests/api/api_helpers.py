"""Helpers for the HTTP API tests: test settings and an app served over in-process HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from captioner.config import Settings


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for a test: nothing downloaded, nothing read from the environment's model."""
    values: dict[str, Any] = {
        "model_dir": tmp_path / "no-model",
        "offline": True,
        "max_batch_wait_ms": 2.0,
        "drain_timeout_s": 5.0,
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def serving(app: FastAPI, *, wait_loaded: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and talk HTTP to it in-process."""
    async with app.router.lifespan_context(app):
        if wait_loaded:
            await app.state.service.wait_loaded()
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client
