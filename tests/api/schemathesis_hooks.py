"""Schemathesis set-up for ``test_schema.py``: the breaches of the schema it cannot send.

Schemathesis draws values for the ``image`` parts from the schema, then sends each as a
part with an image Content-Type, which is a file to the server (see ``api/uploads.py``).
A few breaches it draws therefore never reach the wire as breaches; ``filter_case`` skips
those. Every other request is sent, and judged by every check.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis.core.parameters import ParameterLocation


def _image_schema(case: schemathesis.Case) -> dict[str, Any]:
    form = case.operation.definition.raw["requestBody"]["content"]["multipart/form-data"]
    return dict(form["schema"]["properties"]["image"])


def _body_is_valid(case: schemathesis.Case) -> bool:
    component = case.meta.components.get(ParameterLocation.BODY) if case.meta else None
    return component is None or component.mode.is_positive


def _is_empty(value: object) -> bool:
    data = getattr(value, "data", value)  # schemathesis may wrap bytes in its Binary
    return isinstance(data, str | bytes) and len(data) == 0


@schemathesis.hook
def filter_case(context: schemathesis.HookContext, case: schemathesis.Case) -> bool:
    """Skip a batch drawn to break the schema in a way that cannot reach the wire.

    Schemathesis sends each drawn ``image`` value as a part with an image Content-Type: a
    file, to the server, whatever was drawn (``0`` or ``{}`` become files holding those
    bytes, and one value drawn where the list was due is a list of one). Drawn as the right
    number of non-empty values, it is on the wire a valid batch, which the route answers
    file by file (an undecodable image gets an error entry), as the document says. The
    breaches the server can see (no file, too many, an empty one) are all still sent, and
    so is everything drawn for the one-image route, which refuses any file it cannot read.
    """
    if _body_is_valid(case) or not isinstance(case.body, dict) or "image" not in case.body:
        return True
    schema = _image_schema(case)
    if schema.get("type") != "array":
        return True
    image = case.body["image"]
    files = image if isinstance(image, list) else [image]
    return not (1 <= len(files) <= int(schema["maxItems"]) and not any(map(_is_empty, files)))
