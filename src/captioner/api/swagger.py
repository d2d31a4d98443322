"""MAX's ``/swagger.json``: the ``/model/*`` routes as a Swagger 2.0 document.

Derived from FastAPI's own OpenAPI 3.1 document, so the routes are described once: this
module only translates the shapes Swagger 2.0 spells differently (query parameters and
response headers carry their type inline, multipart fields become ``formData`` parameters
of type ``file``, ``$ref`` targets move from ``components/schemas`` to ``definitions``,
nullable fields lose their ``anyOf``).
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["MAX_SWAGGER_TITLE", "swagger_document"]

# MAX's test suite checks the title. The version is the server's own (the package's), as in
# the OpenAPI document: MAX's clients do not read it.
MAX_SWAGGER_TITLE = "MAX Image Caption Generator"

_OPENAPI_REF = "#/components/schemas/"
_SWAGGER_REF = "#/definitions/"
_MULTIPART = "multipart/form-data"

JSON = dict[str, Any]


def swagger_document(openapi: JSON, path_prefix: str = "/model/") -> JSON:
    """Translate the routes under ``path_prefix`` of an OpenAPI 3.x document to Swagger 2.0.

    Args:
        openapi: FastAPI's ``app.openapi()``; not modified.
        path_prefix: Which paths to keep.

    Returns:
        A Swagger 2.0 document with every schema those paths reference.
    """
    schemas: JSON = openapi.get("components", {}).get("schemas", {})
    paths: JSON = {}
    for path, operations in openapi.get("paths", {}).items():
        if path.startswith(path_prefix):
            paths[path] = {
                method: _operation(operation, schemas) for method, operation in operations.items()
            }
    definitions = {name: _schema(schemas[name]) for name in sorted(_referenced(paths, schemas))}
    return {
        "swagger": "2.0",
        "info": {
            "title": MAX_SWAGGER_TITLE,
            "version": openapi.get("info", {}).get("version", ""),
            "description": openapi.get("info", {}).get("description", ""),
        },
        "basePath": "/",
        "produces": ["application/json"],
        "consumes": ["application/json", _MULTIPART],
        "tags": [{"name": "model", "description": "Caption images, describe the model"}],
        "paths": paths,
        "definitions": definitions,
    }


def _operation(operation: JSON, schemas: JSON) -> JSON:
    result: JSON = {
        key: operation[key]
        for key in ("tags", "summary", "description", "operationId")
        if key in operation
    }
    parameters = [_parameter(parameter) for parameter in operation.get("parameters", [])]
    body = operation.get("requestBody")
    if body is not None:
        form = body.get("content", {}).get(_MULTIPART)
        if form is None:
            raise ValueError(f"{operation.get('operationId')}: only multipart bodies are mapped")
        parameters.extend(_form_parameters(_resolve(form["schema"], schemas)))
        result["consumes"] = [_MULTIPART]
    if parameters:
        result["parameters"] = parameters
    result["produces"] = ["application/json"]
    result["responses"] = {
        code: _response(response) for code, response in operation.get("responses", {}).items()
    }
    return result


def _parameter(parameter: JSON) -> JSON:
    """A query/path/header parameter: Swagger 2.0 puts the type on the parameter itself."""
    result: JSON = {"name": parameter["name"], "in": parameter["in"]}
    result["required"] = bool(parameter.get("required", False))
    if "description" in parameter:
        result["description"] = parameter["description"]
    schema = _schema(parameter.get("schema", {}))
    for key in ("type", "format", "items", "enum", "default", "minimum", "maximum"):
        if key in schema:
            result[key] = schema[key]
    return result


def _form_parameters(schema: JSON) -> list[JSON]:
    """Multipart fields as ``formData`` parameters; files (or lists of them) as ``file``."""
    required = set(schema.get("required", []))
    parameters = []
    for name, field in schema.get("properties", {}).items():
        parameter: JSON = {"name": name, "in": "formData", "required": name in required}
        if "description" in field:
            parameter["description"] = field["description"]
        item = field.get("items", field) if field.get("type") == "array" else field
        if _is_binary(item):
            # Swagger 2.0 has no array of files: a repeated field is documented as one.
            parameter["type"] = "file"
        else:
            parameter.update({k: v for k, v in _schema(field).items() if k in ("type", "items")})
        parameters.append(parameter)
    return parameters


def _is_binary(schema: JSON) -> bool:
    return schema.get("format") == "binary" or "contentMediaType" in schema


def _response(response: JSON) -> JSON:
    result: JSON = {"description": response.get("description", "")}
    content = response.get("content", {})
    media = content.get("application/json") or next(iter(content.values()), None)
    if media and media.get("schema"):
        result["schema"] = _schema(media["schema"])
    headers = response.get("headers", {})
    if headers:  # Swagger 2.0 puts a header's type on the header itself
        result["headers"] = {
            name: {"description": header.get("description", ""), **_schema(header["schema"])}
            for name, header in headers.items()
        }
    return result


def _schema(schema: JSON) -> JSON:
    """A JSON Schema (2020-12, as pydantic writes it) in the Swagger 2.0 subset."""
    schema = copy.deepcopy(schema)
    any_of = schema.pop("anyOf", None)
    if any_of is not None:
        options = [option for option in any_of if option.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express anyOf {any_of} in Swagger 2.0")
        merged = {**_schema(options[0]), **schema}
        if len(options) < len(any_of):
            merged["x-nullable"] = True
        return merged
    result: JSON = {}
    for key, value in schema.items():
        if key == "$ref":
            result[key] = value.replace(_OPENAPI_REF, _SWAGGER_REF)
        elif key == "const":
            result["enum"] = [value]
        elif key == "examples":
            result["example"] = value[0]
        elif key == "contentMediaType":
            continue
        elif key == "properties":
            result[key] = {name: _schema(prop) for name, prop in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            result[key] = _schema(value)
        else:
            result[key] = value
    return result


def _resolve(schema: JSON, schemas: JSON) -> JSON:
    ref = schema.get("$ref")
    return schemas[ref.removeprefix(_OPENAPI_REF)] if ref else schema


def _referenced(node: Any, schemas: JSON) -> set[str]:
    """Names of the component schemas ``node`` refers to, directly or through others."""
    found: set[str] = set()
    pending = [node]
    while pending:
        current = pending.pop()
        if isinstance(current, dict):
            ref = current.get("$ref")
            if isinstance(ref, str) and ref.startswith(_SWAGGER_REF):
                name = ref.removeprefix(_SWAGGER_REF)
                if name not in found:
                    found.add(name)
                    pending.append(_schema(schemas[name]))
            pending.extend(current.values())
        elif isinstance(current, list):
            pending.extend(current)
    return found
