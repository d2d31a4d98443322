"""Fixtures for the HTTP API tests: a fake engine, and a ready app served over httpx."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from captioner.api.app import create_app
from support.api_helpers import make_settings, serving
from support.fake_engine import FakeEngine


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
async def client(tmp_path: Path, fake: FakeEngine) -> AsyncIterator[httpx.AsyncClient]:
    """A ready server over the fake engine, default settings."""
    async with serving(create_app(make_settings(tmp_path), engine=fake)) as client:
        yield client
