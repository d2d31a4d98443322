"""The OpenAPI document as this server really behaves, with the limits of its settings.

FastAPI writes the document from the routes; this module corrects what it cannot know:

- validation failures are answered 400 in MAX's shape, never FastAPI's 422;
- ``beam_size`` and ``max_length`` are integers from their minimum (1, and 3 for
  ``max_length``) to the server's maximum, with the server's default (the routes declare
  them optional and check them against the settings, so FastAPI sees neither bound);
- the ``image`` parts: how many a batch may hold, and the size limits in words (JSON
  Schema cannot bound a file's bytes or pixels);
- any route may fail with 500 (an unexpected error, answered in the same error shape);
- with API keys on (``api_keys_file``), the bearer scheme, and 401 on every route that
  needs a key (nothing about keys otherwise, so MAX's clients see the document they know).
- every answer carries ``X-Request-ID`` (``api/middleware.py``).

A schema-driven client (schemathesis in the tests) then never has a schema-valid request
refused.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from captioner.api.auth import BEARER_SCHEME, needs_key
from captioner.api.deps import search_bounds
from captioner.config import Settings

__all__ = ["IMAGE_MEDIA_TYPES", "install_openapi"]

# What an image part may hold. The part's declared type is not checked (the bytes decide,
# and clients often send application/octet-stream); these are the formats read.
IMAGE_MEDIA_TYPES = (
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/bmp",
    "image/webp",
    "image/tiff",
)

JSON = dict[str, Any]

_MULTIPART = "multipart/form-data"
_UNAUTHORIZED = {
    "description": "No API key, or not one of the server's.",
    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
}
_REQUEST_ID = {
    "description": (
        "The request's id: the request's own X-Request-ID when it is 1 to 128 letters, "
        "digits or ._:@/+=- characters, else a new one. The access log line has it too."
    ),
    "schema": {"type": "string"},
}
_INTERNAL_ERROR = {
    "description": "An unexpected error; the body gives no details.",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
}


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Make ``app.openapi()`` return the corrected document (built once, then cached)."""
    build = app.openapi

    def openapi() -> JSON:
        if app.openapi_schema is None:
            document = build()
            _correct(document, settings)
            if settings.api_keys_file is not None:
                _require_keys(document, public_metrics=settings.public_metrics)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _correct(document: JSON, settings: Settings) -> None:
    schemas: JSON = document.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    bounds = search_bounds(settings)
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            responses.setdefault("500", dict(_INTERNAL_ERROR))
            for response in responses.values():  # new dicts: some are shared constants
                response["headers"] = {**response.get("headers", {}), "X-Request-ID": _REQUEST_ID}
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query" and parameter["name"] in bounds:
                    lower, default, upper = bounds[parameter["name"]]
                    parameter["schema"] = {
                        "type": "integer",
                        "minimum": lower,
                        "maximum": upper,
                        "default": default,
                    }
            form = operation.get("requestBody", {}).get("content", {}).get(_MULTIPART)
            if form is not None:
                _describe_images(_resolve(form["schema"], schemas), settings)
                form["encoding"] = {"image": {"contentType": ", ".join(IMAGE_MEDIA_TYPES)}}


def _require_keys(document: JSON, *, public_metrics: bool) -> None:
    """Declare the bearer scheme, and put it (and its 401) on each route that needs a key."""
    schemes = document.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes[BEARER_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "One of the server's API keys (its `api_keys_file`).",
    }
    for path, operations in document.get("paths", {}).items():
        if not needs_key(path, public_metrics=public_metrics):
            continue
        for operation in operations.values():
            operation["security"] = [{BEARER_SCHEME: []}]
            operation.setdefault("responses", {})["401"] = _UNAUTHORIZED


def _describe_images(body: JSON, settings: Settings) -> None:
    """The ``image`` field of a multipart body: count bounds and size limits in words."""
    field = body.get("properties", {}).get("image")
    if field is None:
        return
    kinds = "JPEG, PNG, GIF, BMP, WebP or TIFF, judged by the bytes"
    pixels = f"at most {settings.max_image_pixels:,} pixels"
    if field.get("type") == "array":
        field["minItems"] = 1
        field["maxItems"] = settings.max_files_per_batch_request
        field["description"] = (
            f"1 to {settings.max_files_per_batch_request} images, each a part named image: "
            f"{kinds}; each at most {settings.max_upload_bytes:,} bytes and {pixels}, the "
            f"whole request body at most {settings.max_batch_upload_bytes:,} bytes (larger: "
            "413, for the image or for the request)."
        )
    else:
        field["description"] = (
            f"The image: {kinds}; the whole request body at most "
            f"{settings.max_upload_bytes:,} bytes, the image {pixels} (larger: 413)."
        )


def _resolve(schema: JSON, schemas: JSON) -> JSON:
    ref = schema.get("$ref")
    return schemas[ref.rsplit("/", 1)[-1]] if ref else schema
