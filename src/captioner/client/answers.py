"""The server's answers read into the client's types: captions, metadata, or the error.

The JSON shapes are ``captioner.api.schemas``' (MAX's, plus ``logprob``); a server that
leaves ``logprob`` out (IBM's original MAX server) still gives one, from the probability.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from captioner.client.errors import (
    AuthenticationError,
    BadImageError,
    ClientError,
    ErrorContext,
    ImageTooLargeError,
    InvalidParameterError,
    RequestRejectedError,
    ServerError,
    ServerOverloadedError,
)
from captioner.results import Caption, ImageResult

__all__ = [
    "RETRYABLE_STATUSES",
    "CaptionResult",
    "ModelMetadata",
    "error_for",
    "read_captions",
    "read_metadata",
]

# Answers that may change on a later try: load shedding and server-side failures.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class ModelMetadata:
    """``GET /model/metadata``: MAX's six fields describing the server's model."""

    id: str
    name: str
    description: str
    type: str
    source: str
    license: str


@dataclass(frozen=True)
class CaptionResult:
    """One image captioned by a server.

    Attributes:
        captions: the ranked captions, best first (``text``, ``logprob``, ``probability``).
        request_id: the request's ``X-Request-ID``, as in the server's access log.
        server: the base URL of the server that answered.
        model: the server's model (``model.name``, ``model.id``), when it describes it.
    """

    captions: tuple[Caption, ...]
    request_id: str | None
    server: str
    model: ModelMetadata | None = None

    @property
    def best(self) -> Caption | None:
        """The top caption, if any."""
        return self.captions[0] if self.captions else None

    def to_image_result(self, source: str) -> ImageResult:
        """The same captions as the record every collection path yields, under ``source``."""
        return ImageResult(source=source, captions=self.captions)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _not_captioner(response: httpx.Response, what: str, context: ErrorContext) -> ServerError:
    snippet = " ".join(response.text[:200].split())
    fields: ErrorContext = {**context, "status": response.status_code}
    return ServerError(
        f"the answer is not a captioner {what} (HTTP {response.status_code}"
        + (f": {snippet})" if snippet else ")"),
        **fields,
    )


def read_captions(
    response: httpx.Response, context: ErrorContext | None = None
) -> tuple[Caption, ...]:
    """The captions of a 2xx ``/model/predict`` answer, best first.

    Raises:
        ServerError: the body is not a predict answer (a proxy's page, another service).
    """
    body = _json(response)
    predictions = body.get("predictions") if isinstance(body, Mapping) else None
    if not isinstance(predictions, list):
        raise _not_captioner(response, "prediction", context or {})
    try:
        return tuple(_caption(p) for p in predictions)
    except (KeyError, TypeError, ValueError):
        raise _not_captioner(response, "prediction", context or {}) from None


def _caption(prediction: Mapping[str, Any]) -> Caption:
    logprob = prediction.get("logprob")
    if logprob is None:  # MAX's original answer: the probability only
        probability = float(prediction["probability"])
        logprob = math.log(probability) if probability > 0.0 else -math.inf
    return Caption(text=str(prediction["caption"]), logprob=float(logprob))


_METADATA_FIELDS = ("id", "name", "description", "type", "source", "license")


def read_metadata(response: httpx.Response, context: ErrorContext | None = None) -> ModelMetadata:
    """The metadata of a 2xx ``/model/metadata`` answer.

    Raises:
        ServerError: the body does not have MAX's six fields.
    """
    body = _json(response)
    try:
        return ModelMetadata(**{key: str(body[key]) for key in _METADATA_FIELDS})
    except (KeyError, TypeError):
        raise _not_captioner(response, "metadata answer", context or {}) from None


def error_for(response: httpx.Response, context: ErrorContext) -> ClientError:
    """The error an error answer means, with the server's message.

    ``context``: the request id, URL and tries to give the error (its status is the
    answer's). A 503 is read as overload here; the caller tells a server that is not
    ready apart (its readiness probe says so).
    """
    status = response.status_code
    body = _json(response)
    message = body.get("message") if isinstance(body, Mapping) else None
    errors = body.get("errors") if isinstance(body, Mapping) else None
    if not isinstance(message, str) or not message:
        snippet = " ".join(response.text[:200].split())
        message = f"HTTP {status} {response.reason_phrase}".rstrip()
        message += f": {snippet}" if snippet else ""
    if isinstance(errors, Mapping) and errors:
        problems = {str(k): str(v) for k, v in errors.items()}
        message = f"{message}: " + "; ".join(f"{k}: {v}" for k, v in problems.items())
    else:
        problems = {}
    fields: ErrorContext = {**context, "status": status}
    if status == 400:
        if set(problems) - {"image"}:
            return InvalidParameterError(message, errors=problems, **fields)
        return BadImageError(message, **fields)
    if status in (401, 403):
        return AuthenticationError(message, **fields)
    if status == 413:
        return ImageTooLargeError(message, **fields)
    if status in (429, 503):
        return ServerOverloadedError(message, **fields)
    if status >= 500 or status < 300:
        return ServerError(message, **fields)
    return RequestRejectedError(message, **fields)
