"""Fixtures of the download and transfer tests: a misbehaving HTTP server on 127.0.0.1 and
tarballs in the real layout."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.http_fixtures import Assets, AssetServer, SilentServer, make_assets


@pytest.fixture
def server() -> Iterator[AssetServer]:
    asset_server = AssetServer()
    yield asset_server
    asset_server.stop()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    silent_server = SilentServer()
    yield silent_server
    silent_server.stop()


@pytest.fixture
def assets() -> Assets:
    return make_assets()


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return tmp_path / "models" / "im2txt"
