"""Fixtures of the client tests: a real demo server, and the client kind to run on."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from client.calls import KINDS
from support.api_helpers import demo_server


@dataclass(frozen=True)
class Server:
    """A running ``captioner serve``: its base URL and its log file."""

    url: str
    log: Path


@pytest.fixture(scope="package")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``captioner serve --model demo``, default settings, shared by the package's tests."""
    log = tmp_path_factory.mktemp("demo-server") / "serve.log"
    with demo_server(log) as url:
        yield Server(url, log)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    """Which client a test runs on: "sync" (Client) or "async" (AsyncClient)."""
    return str(request.param)
