"""A misbehaving-on-demand HTTP file server on 127.0.0.1, and small tarballs in the real layout.

``tests/test_download.py`` drives the downloader against it: each path serves bytes with a
behaviour (honest, missing, failing, dropping, stalling), and every request is recorded so
tests can check what the client asked for (``Range`` headers, how many tries).
"""

from __future__ import annotations

import hashlib
import io
import random
import socket
import tarfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal

__all__ = [
    "MEMBER_NAMES",
    "AssetServer",
    "Assets",
    "Route",
    "SilentServer",
    "make_assets",
    "snapshot",
    "tar_gz",
]

Behaviour = Literal["ok", "missing", "error_first", "drop_first", "stall", "pause"]

# The member names of the real assets.tar.gz (docs/pretrained-model.md).
MEMBER_NAMES = (
    "checkpoint/checkpoint",
    "checkpoint/model2.ckpt-2000000.data-00000-of-00001",
    "checkpoint/model2.ckpt-2000000.index",
    "checkpoint/model2.ckpt-2000000.meta",
)


@dataclass
class Route:
    """What one path serves, and how badly.

    ``error_first``: the first ``failures`` requests get a 503. ``drop_first``: the first
    ``failures`` requests announce the full length, send half and hang up. ``stall``: send
    a few bytes, then nothing until the server stops. ``pause``: send half, wait
    ``pause_s``, send the rest (a slow network that never stalls for long).
    """

    body: bytes
    behaviour: Behaviour = "ok"
    failures: int = 1
    pause_s: float = 1.0


@dataclass
class Request:
    path: str
    range: str | None


@dataclass
class AssetServer:
    """A threaded HTTP/1.0 server on an ephemeral 127.0.0.1 port; ``stop()`` when done."""

    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def url(self, path: str) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def paths_requested(self) -> list[str]:
        return [request.path for request in self.requests]

    def _record(self, path: str, range_header: str | None) -> int:
        """Log a request; return how many earlier requests this path had."""
        with self._lock:
            seen = sum(1 for request in self.requests if request.path == path)
            self.requests.append(Request(path, range_header))
            return seen


def _handler_for(server: AssetServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # quiet test output
            pass

        def do_GET(self) -> None:
            range_header = self.headers.get("Range")
            seen = server._record(self.path, range_header)
            route = server.routes.get(self.path)
            if route is None or route.behaviour == "missing":
                self.send_error(404, "Not Found")
                return
            if route.behaviour == "error_first" and seen < route.failures:
                self.send_error(503, "Service Unavailable")
                return
            body, start = route.body, _range_start(range_header)
            if start is not None and start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if start is not None:
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                start = 0
                self.send_response(200)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            payload = body[start:]
            if route.behaviour == "drop_first" and seen < route.failures:
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                return  # HTTP/1.0: returning closes the connection, short of Content-Length
            if route.behaviour == "stall":
                self.wfile.write(payload[:100])
                self.wfile.flush()
                server._stopping.wait(30)
                return
            if route.behaviour == "pause":
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                server._stopping.wait(route.pause_s)
                payload = payload[len(payload) // 2 :]
            self.wfile.write(payload)

    return Handler


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts every connection and never answers.

    What a black-holed proxy or a captive portal looks like to a client: the connection
    succeeds at once, then nothing. ``accepted`` counts the connections; ``stop()`` when done.
    """

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.02)
        self._connections: list[socket.socket] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def accepted(self) -> int:
        return len(self._connections)

    def url(self, path: str) -> str:
        host, port = self._listener.getsockname()[:2]
        return f"http://{host}:{port}{path}"

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        for connection in self._connections:
            connection.close()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            self._connections.append(connection)  # held open, never read or written


def _range_start(header: str | None) -> int | None:
    if header is None or not header.startswith("bytes=") or not header.endswith("-"):
        return None
    return int(header[len("bytes=") : -1])


@dataclass(frozen=True)
class Assets:
    """A test tarball in the real layout, a vocabulary, and the digests to pin for them."""

    tarball: bytes
    members: dict[str, bytes]
    vocab: bytes

    @property
    def sha512(self) -> dict[str, str]:
        return {name: hashlib.sha512(data).hexdigest() for name, data in self.members.items()}

    @property
    def vocab_sha256(self) -> str:
        return hashlib.sha256(self.vocab).hexdigest()


def make_assets(*, extra: dict[str, bytes] | None = None, seed: int = 0) -> Assets:
    """Build the four checkpoint files (the data file ~96 KiB of random bytes) and tar.gz them.

    ``extra`` adds members that are not pinned; ``seed`` varies the content, so two calls
    can stand for an old and a new release.
    """
    rng = _bytes_from_seed(seed)
    members = {
        "checkpoint/checkpoint": b'model_checkpoint_path: "model2.ckpt-2000000"\n',
        "checkpoint/model2.ckpt-2000000.data-00000-of-00001": rng(96 * 1024),
        "checkpoint/model2.ckpt-2000000.index": rng(1024),
        "checkpoint/model2.ckpt-2000000.meta": rng(2048),
    }
    return Assets(
        tarball=tar_gz({**members, **(extra or {})}),
        members=members,
        vocab=f"a {1000 + seed}\nman 500\nriding 20\nhorse 10".encode(),
    )


def tar_gz(members: dict[str, bytes], *, extra_infos: Sequence[tarfile.TarInfo] = ()) -> bytes:
    """A .tar.gz of regular files plus any hand-made entries (links, devices)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for info in extra_infos:
            archive.addfile(info)
    return buffer.getvalue()


def snapshot(directory: Path) -> dict[str, bytes | None]:
    """Every path under ``directory`` with its bytes (None for directories); {} if absent."""
    if not directory.exists():
        return {}
    return {
        str(path.relative_to(directory)): None if path.is_dir() else path.read_bytes()
        for path in sorted(directory.rglob("*"))
    }


def _bytes_from_seed(seed: int) -> Callable[[int], bytes]:
    generator = random.Random(seed)
    return generator.randbytes
