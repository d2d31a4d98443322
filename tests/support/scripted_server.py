"""An HTTP server on 127.0.0.1 that answers from a script, for the client's failure tests.

Each ``POST /model/predict`` gets the next scripted :class:`Answer` (then the ``default``
one), unless its file name has an answer of its own; the readiness probe and the
metadata have fixed answers. Every request is recorded
with its arrival time and headers, so a test can count the tries, measure the waits between
them and check what the client sent.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["METADATA", "PREDICTIONS", "Answer", "ScriptedServer", "Seen"]

# A /model/predict answer, as captioner gives it.
PREDICTIONS: dict[str, Any] = {
    "status": "ok",
    "predictions": [
        {"index": "0", "caption": "a red circle .", "probability": 0.5, "logprob": math.log(0.5)},
        {"index": "1", "caption": "a red square .", "probability": 0.25, "logprob": math.log(0.25)},
    ],
}
METADATA = {
    "id": "scripted", "name": "a scripted server", "description": "answers from a script",
    "type": "Image-to-Text Translation", "source": "tests", "license": "Apache-2.0",
}  # fmt: skip


@dataclass(frozen=True)
class Answer:
    """One scripted answer: status, JSON (or raw) body, headers."""

    status: int = 200
    body: dict[str, Any] | bytes = field(default_factory=lambda: PREDICTIONS)
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # held back this long before answering

    @classmethod
    def error(cls, status: int, message: str, **headers: str) -> Answer:
        """captioner's error body, ``{"status": "error", "message": ...}``."""
        return cls(status, {"status": "error", "message": message}, headers)


@dataclass(frozen=True)
class Seen:
    """A request the server received."""

    at: float  # time.monotonic() when its headers were read
    method: str
    path: str
    headers: dict[str, str]


class ScriptedServer:
    """Answers predictions from ``answers`` in order, then ``default``; use as a context
    manager. ``ready`` answers ``/v2/health/ready``, ``metadata`` ``/model/metadata``."""

    def __init__(
        self,
        answers: Iterable[Answer] = (),
        default: Answer | None = None,
        *,
        ready: Answer | None = None,
        metadata: Answer | None = None,
        by_name: dict[str, Answer] | None = None,
    ) -> None:
        self.answers = deque(answers)
        self.by_name = by_name or {}  # an upload's file name -> its answer, before the script
        self.default = default or Answer()
        self.fixed = {
            "/v2/health/ready": ready or Answer(200, {"ready": True}),
            "/model/metadata": metadata or Answer(200, METADATA),
        }
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def predictions(self) -> list[Seen]:
        """The ``/model/predict`` requests received, in order."""
        return [seen for seen in self.requests if seen.path.startswith("/model/predict")]

    def _answer_for(self, seen: Seen, body: bytes) -> Answer:
        with self._lock:
            self.requests.append(seen)
            fixed = self.fixed.get(seen.path)
            if fixed is not None:
                return fixed
            for name, answer in self.by_name.items():
                if f'filename="{name}"'.encode() in body:
                    return answer
            return self.answers.popleft() if self.answers else self.default


def _handler(server: ScriptedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            seen = Seen(time.monotonic(), self.command, self.path, dict(self.headers.items()))
            length = int(self.headers.get("Content-Length") or 0)
            answer = server._answer_for(seen, self.rfile.read(length))
            time.sleep(answer.delay_s)
            body = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body)
            payload = body if isinstance(body, bytes) else body.encode()
            self.send_response(answer.status)
            content_type = "application/json" if isinstance(answer.body, dict) else "text/html"
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
