"""The one place where errors become HTTP answers: status, MAX-shaped JSON body, headers.

Every 4xx/5xx body is ``{"status": "error", "message": ...}``; validation failures add
MAX's ``errors`` object (parameter -> problem) under MAX's message. Each answer also
records a short ``reason`` in the request state, which the metrics count rejections by.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from captioner.errors import (
    CaptionerError,
    DeadlineExceededError,
    InvalidImageError,
    InvalidRequestError,
    ModelNotReadyError,
    OverloadedError,
)

__all__ = [
    "MAX_MISSING_IMAGE",
    "MAX_VALIDATION_FAILED",
    "NOT_READY_RETRY_AFTER_S",
    "RETRY_AFTER_HEADER",
    "ErrorRule",
    "body_timeout_message",
    "error_body",
    "install_error_handlers",
    "rule_for",
]

logger = logging.getLogger(__name__)


def body_timeout_message(timeout_s: float) -> str:
    """The 408 for a body that stalled: the app's answer, or the protocol's when it is late."""
    return f"the request's body did not arrive within {timeout_s:g} s"


# MAX's exact texts (its clients and tests may match them).
MAX_VALIDATION_FAILED = "Input payload validation failed"
MAX_MISSING_IMAGE = "An image file Missing required parameter in an uploaded file"
MAX_METHOD_NOT_ALLOWED = "The method is not allowed for the requested URL."
NOT_FOUND = "The requested URL was not found on the server."
INTERNAL_ERROR = "Internal Server Error"

# While loading or draining, a retry in a few seconds may reach a ready server.
NOT_READY_RETRY_AFTER_S = 5.0
# How the OpenAPI document describes the header of every 503.
RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "Seconds after which a retry may succeed.",
        "schema": {"type": "integer", "minimum": 1},
    }
}


@dataclass(frozen=True)
class ErrorRule:
    """How one kind of error is answered."""

    status: int
    reason: str  # label of captioner_rejections_total


# Most specific first; the first rule whose type matches wins.
_RULES: tuple[tuple[type[CaptionerError], ErrorRule], ...] = (
    (InvalidRequestError, ErrorRule(400, "invalid_parameter")),
    (InvalidImageError, ErrorRule(400, "invalid_image")),
    (OverloadedError, ErrorRule(503, "queue_full")),
    (ModelNotReadyError, ErrorRule(503, "not_ready")),
    (DeadlineExceededError, ErrorRule(504, "deadline_exceeded")),
)
_IMAGE_TOO_LARGE = ErrorRule(413, "image_too_large")
_UNEXPECTED = ErrorRule(500, "internal_error")


def rule_for(exc: BaseException) -> ErrorRule:
    """The status and metrics reason for an error raised while serving a request."""
    if isinstance(exc, InvalidImageError) and exc.too_large:
        return _IMAGE_TOO_LARGE
    for error_type, rule in _RULES:
        if isinstance(exc, error_type):
            return rule
    return _UNEXPECTED


def error_body(message: str, errors: dict[str, str] | None = None) -> dict[str, object]:
    """The JSON body of an error answer."""
    body: dict[str, object] = {"status": "error", "message": message}
    if errors:
        body["errors"] = errors
    return body


def _answer(
    request: Request,
    status: int,
    reason: str,
    body: dict[str, object],
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    request.state.error_reason = reason
    return JSONResponse(body, status_code=status, headers=headers)


async def _captioner_error(request: Request, exc: CaptionerError) -> JSONResponse:
    rule = rule_for(exc)
    if rule is _UNEXPECTED:  # a CaptionerError no rule covers is our fault, not the client's
        logger.error("unexpected error serving %s", request.url.path, exc_info=exc)
        return _answer(request, 500, rule.reason, error_body(INTERNAL_ERROR))
    headers = None
    if isinstance(exc, OverloadedError):
        headers = {"Retry-After": str(math.ceil(exc.retry_after_s))}
    elif isinstance(exc, ModelNotReadyError):
        headers = {"Retry-After": str(math.ceil(NOT_READY_RETRY_AFTER_S))}
    if isinstance(exc, InvalidRequestError) and exc.field:
        body = error_body(MAX_VALIDATION_FAILED, {exc.field: str(exc)})
    else:
        body = error_body(str(exc))
    return _answer(request, rule.status, rule.reason, body, headers)


def _validation_errors(exc: RequestValidationError) -> dict[str, str]:
    """FastAPI's error list -> MAX's ``{parameter: problem}``, MAX's text for the image."""
    errors: dict[str, str] = {}
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ())]
        name = location[-1] if location else "body"
        if location[:1] == ["body"] and len(location) >= 2:
            name = location[1]
        if name == "image":
            errors[name] = MAX_MISSING_IMAGE
        else:
            errors.setdefault(name, str(error.get("msg", "invalid value")))
    return errors


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    body = error_body(MAX_VALIDATION_FAILED, _validation_errors(exc))
    return _answer(request, 400, "invalid_parameter", body)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 405:
        message, reason = MAX_METHOD_NOT_ALLOWED, "method_not_allowed"
    elif exc.status_code == 404:
        message, reason = NOT_FOUND, "not_found"
    else:
        message, reason = str(exc.detail), f"http_{exc.status_code}"
    headers = dict(exc.headers) if exc.headers else None
    return _answer(request, exc.status_code, reason, error_body(message), headers)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # Starlette logs the traceback after this answer; the client sees no internals.
    return _answer(request, 500, _UNEXPECTED.reason, error_body(INTERNAL_ERROR))


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers above on ``app``."""
    app.add_exception_handler(CaptionerError, _captioner_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected_error)
