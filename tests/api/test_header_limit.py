"""``max_header_bytes``: a request's line and headers past it get 400, from the settings."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

import pytest

from captioner.api.app import create_app
from captioner.config import Settings
from support.api_helpers import make_settings, serving_on_loopback
from support.fake_engine import FakeEngine


def send_header_in_pieces(port: int, header_value_bytes: int) -> bytes:
    """Send a request whose one header holds this many bytes, 1 KiB at a time (so the
    server buffers it unfinished, as from a slow network), and return the answer."""
    head = b"GET /v2/health/live HTTP/1.1\r\nHost: test\r\nX-Big: "
    rest = b"a" * header_value_bytes + b"\r\nConnection: close\r\n\r\n"
    answer = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with contextlib.suppress(OSError):  # the server may close before the end is sent
            sock.sendall(head)
            for start in range(0, len(rest), 1024):
                time.sleep(0.02)
                sock.sendall(rest[start : start + 1024])
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer.extend(chunk)
    return bytes(answer)


@pytest.mark.parametrize(
    ("limit", "under", "over"),
    [(None, 12 * 1024, 20 * 1024), (4096, 3000, 6000)],
    ids=["default", "set"],
)
def test_headers_past_max_header_bytes_get_400(
    tmp_path: Path, fake: FakeEngine, limit: int | None, under: int, over: int
) -> None:
    overrides = {} if limit is None else {"max_header_bytes": limit}
    settings = make_settings(tmp_path, **overrides)
    assert settings.max_header_bytes == (limit or Settings().max_header_bytes)
    with serving_on_loopback(create_app(settings, engine=fake)) as port:
        assert send_header_in_pieces(port, under).startswith(b"HTTP/1.1 200 ")
        refused = send_header_in_pieces(port, over)
    assert refused.startswith(b"HTTP/1.1 400 "), refused[:200]
