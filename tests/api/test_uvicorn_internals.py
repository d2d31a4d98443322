"""The start-up check of the uvicorn internals the server builds on, and its fallback."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle

from captioner.api import protocol, server
from captioner.api.app import create_app
from captioner.api.internals import Needs, missing
from support.api_helpers import make_settings
from support.fake_engine import FakeEngine


class Sample:
    flag = True

    def __init__(self, size: int) -> None:
        self.size = size

    def run(self) -> None:
        pass


def test_missing_names_each_absent_method_attribute_and_parameter() -> None:
    present = Needs(Sample, methods=("run", "flag"), attributes=("size",), parameters=("size",))
    assert missing([present]) == []
    absent = Needs(Sample, methods=("stop",), attributes=("speed",), parameters=("speed",))
    assert missing([absent]) == ["Sample.stop", "Sample.speed", "Sample.__init__(speed)"]


def test_the_installed_uvicorn_has_everything_the_server_uses() -> None:
    assert missing([*protocol.NEEDS, *server.NEEDS]) == []
    assert protocol.guarded_protocol() is protocol.GuardedH11Protocol


def test_a_protocol_internal_gone_means_a_warning_and_the_plain_protocol(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delattr(H11Protocol, "on_response_complete")
    with caplog.at_level(logging.WARNING, logger="captioner.api.protocol"):
        assert protocol.guarded_protocol() is H11Protocol
    assert "H11Protocol.on_response_complete" in caplog.text
    assert "header_timeout_s and max_connections do not hold" in caplog.text


def test_a_cycle_attribute_renamed_is_caught_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """Setting ``cycle.disconnected`` on a uvicorn that reads another name would do nothing."""

    def renamed(self: RequestResponseCycle) -> None:
        self.client_gone = False  # type: ignore[attr-defined]
        self.message_event = None  # type: ignore[assignment]
        self.response_started = False
        self.response_complete = False

    monkeypatch.setattr(RequestResponseCycle, "__init__", renamed)
    assert missing(protocol.NEEDS) == ["RequestResponseCycle.disconnected"]
    assert protocol.guarded_protocol() is H11Protocol


def test_a_server_internal_gone_means_a_warning_and_plain_uvicorn(
    tmp_path: Path,
    fake: FakeEngine,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = create_app(make_settings(tmp_path), engine=fake)
    config = uvicorn.Config(app)
    assert type(server._server(config, app.state.service)) is server._DrainingServer
    monkeypatch.delattr(uvicorn.Server, "on_tick")
    with caplog.at_level(logging.WARNING, logger="captioner.api.server"):
        chosen = server._server(config, app.state.service)
    assert type(chosen) is uvicorn.Server
    assert "Server.on_tick" in caplog.text
