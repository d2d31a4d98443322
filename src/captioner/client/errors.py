"""What can go wrong talking to a captioner server, as the client raises it.

::

    CaptionerError                      (captioner.errors)
    └── ClientError                     message, status, request_id, url, attempts
        ├── BadRequestError             400
        │   ├── BadImageError           the image: missing, empty, undecodable, unsupported
        │   └── InvalidParameterError   beam_size or max_length out of the server's bounds
        ├── AuthenticationError         401, 403: no API key, or one the server refuses
        ├── ImageTooLargeError          413: too many bytes or pixels for the server's limits
        ├── RequestRejectedError        any other 4xx (404: not a captioner URL), or 3xx
        └── ServerUnavailableError      it may work later: retried first, then raised
            ├── ServerOverloadedError   503 (queue or upload budget full) or 429, every try
            ├── NotReadyError           503 while the model loads or the server drains
            ├── ServerError             500, 502, 504, or an answer that is not captioner's
            ├── ServerConnectionError   no connection, or it dropped before the answer
            └── ServerTimeoutError      no answer within ``read_timeout`` (not retried)

They live here, not in :mod:`captioner.errors`, because they speak HTTP (statuses, request
ids), which the core never does; they still derive from :class:`CaptionerError`, so one
``except CaptionerError`` covers the whole package. A client error's ``str()`` is the
server's own message when the server answered (what ``caption_many`` records as an image's
error), else what went wrong on the way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

from captioner.errors import CaptionerError

__all__ = [
    "AuthenticationError",
    "BadImageError",
    "BadRequestError",
    "ClientError",
    "ErrorContext",
    "ImageTooLargeError",
    "InvalidParameterError",
    "NotReadyError",
    "RequestRejectedError",
    "ServerConnectionError",
    "ServerError",
    "ServerOverloadedError",
    "ServerTimeoutError",
    "ServerUnavailableError",
]


class ErrorContext(TypedDict, total=False):
    """The keyword arguments every client error takes besides its message."""

    status: int | None
    request_id: str | None
    url: str | None
    attempts: int


class ClientError(CaptionerError):
    """Base of the client's errors.

    Attributes:
        message: the server's message when it answered, else what went wrong on the way.
        status: the HTTP status of the last answer; None when none came.
        request_id: the request's ``X-Request-ID`` (the same on every try of one call, and
            in the server's access log), as the server echoed it or the client sent it.
        url: the URL of the last try (without any user name or password).
        attempts: how many tries were made.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        url: str | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.request_id = request_id
        self.url = url
        self.attempts = attempts

    def _fields(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "request_id": self.request_id,
            "url": self.url,
            "attempts": self.attempts,
        }

    def __reduce__(self) -> tuple[Any, ...]:  # picklable despite keyword-only arguments
        return (_rebuild, (type(self), self.message, self._fields()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self._fields().items() if v is not None)
        return f"{type(self).__name__}({self.message!r}, {fields})"


def _rebuild(cls: type[ClientError], message: str, fields: dict[str, Any]) -> ClientError:
    return cls(message, **fields)


class BadRequestError(ClientError):
    """The server refused the request as malformed (400)."""


class BadImageError(BadRequestError):
    """The server could not read the image: missing, empty, corrupt or of an unread format."""


class InvalidParameterError(BadRequestError):
    """``beam_size`` or ``max_length`` is outside the server's bounds (400).

    Attributes:
        errors: parameter name -> what is wrong with it, as the server said.
    """

    def __init__(
        self, message: str, *, errors: Mapping[str, str] | None = None, **fields: Any
    ) -> None:
        super().__init__(message, **fields)
        self.errors = dict(errors or {})

    def _fields(self) -> dict[str, Any]:
        return {**super()._fields(), "errors": self.errors}


class AuthenticationError(ClientError):
    """The server wants an API key, or refuses the one given (401, 403)."""


class ImageTooLargeError(ClientError):
    """The upload or the decoded image is over the server's limits (413)."""


class RequestRejectedError(ClientError):
    """Any other refusal (404: the base URL is not a captioner server; 405, 408, ...)."""


class ServerUnavailableError(ClientError):
    """The server could not answer now; the same request may succeed later."""


class ServerOverloadedError(ServerUnavailableError):
    """Every try was refused for load: 503 (queue or upload budget full) or 429."""


class NotReadyError(ServerUnavailableError):
    """The server is loading its model, failed to, or is draining (503 on every try)."""


class ServerError(ServerUnavailableError):
    """A server failure on every try (500, 502, 504), or an answer that is not captioner's."""


class ServerConnectionError(ServerUnavailableError):
    """No connection could be made, or it dropped before the answer, on every try."""


class ServerTimeoutError(ServerUnavailableError):
    """The server accepted the request but did not answer within ``read_timeout``."""
