"""Optional API keys: ``Authorization: Bearer <key>`` on every route that serves data.

Off unless a key file is given (``api_keys_file``), so MAX's clients keep working as they
were. The file holds one key a line; blank lines and ``#`` comments are skipped, and
several keys may be listed, so a new key can be handed out before the old one is removed.

What stays open without a key: the health probes (an orchestrator has no key), the web
page's and the API documentation's own files and the OpenAPI documents (the same code and
schema every copy of the package carries: no model, no data; the page needs them to ask for
a key, Swagger UI to offer its "Authorize" button), and ``/metrics`` with
``public_metrics``. Everything else, including any route added later, needs a key.

A key is compared with :func:`hmac.compare_digest` against every configured key (no early
exit), so the time an answer takes says nothing about how much of a guess was right. Keys
are never logged: the access log records the path and status, never headers.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from captioner.api.errors import error_body
from captioner.errors import ConfigurationError

__all__ = ["BEARER_SCHEME", "ApiKeyMiddleware", "load_api_keys", "needs_key"]

# How /openapi.json names the scheme when keys are on.
BEARER_SCHEME = "apiKey"

_OPEN_PATHS = frozenset(
    {"/", "/docs", "/openapi.json", "/swagger.json", "/v2/health/live", "/v2/health/ready"}
)
_OPEN_PREFIXES = ("/static/", "/docs/static/")
_CHALLENGE = 'Bearer realm="captioner"'


def needs_key(path: str, *, public_metrics: bool) -> bool:
    """Whether a request for ``path`` must carry a key (when keys are on)."""
    if path in _OPEN_PATHS or path.startswith(_OPEN_PREFIXES):
        return False
    return not (public_metrics and path == "/metrics")


def load_api_keys(path: Path) -> tuple[bytes, ...]:
    """The keys in ``path``: one a line, blank lines and ``#`` comments skipped.

    Raises:
        ConfigurationError: the file cannot be read, or lists no key (a server that
            nobody can use is a mistake, not a setting).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigurationError(f"cannot read the API key file {path}: {reason}") from exc
    keys = []
    for line in text.splitlines():
        key = line.strip()
        if key and not key.startswith("#"):
            keys.append(key.encode())
    if not keys:
        raise ConfigurationError(f"the API key file {path} lists no key (one a line)")
    return tuple(keys)


class ApiKeyMiddleware:
    """Answer 401 (``WWW-Authenticate: Bearer``) to a request without a configured key."""

    def __init__(self, app: ASGIApp, *, keys: tuple[bytes, ...], public_metrics: bool) -> None:
        self.app = app
        self.keys = keys
        self.public_metrics = public_metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not needs_key(scope["path"], public_metrics=self.public_metrics)
            or self._allowed(scope)
        ):
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["error_reason"] = "unauthorized"
        message = "this server needs an API key: send it as `Authorization: Bearer <key>`"
        headers = {"WWW-Authenticate": _CHALLENGE}
        await JSONResponse(error_body(message), 401, headers=headers)(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        scheme, _, given = Headers(scope=scope).get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        candidate = given.strip().encode()
        matches = [hmac.compare_digest(candidate, key) for key in self.keys]
        return any(matches)
