"""The API's documentation: MAX's ``GET /swagger.json`` and the interactive ``GET /docs``.

``/docs`` is Swagger UI 5 (FastAPI's OpenAPI 3.1 document needs 5.x), served entirely by
this server, so it works offline and behind a firewall: its script and stylesheet come
from the installed ``fastapi-offline`` package, the start-up script and icon from the
page's own bundle. FastAPI's own docs pages are switched off (they load from a CDN). The
routes are plain functions: the first call reads and compresses Swagger UI, which FastAPI
then does off the event loop.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse

from captioner.api.static import html_response, page_bundle, swagger_bundle
from captioner.api.swagger import swagger_document

__all__ = ["router"]

router = APIRouter(tags=["operations"])

# Relative URLs, so the page also works behind a proxy that adds a path prefix.
_DOCS_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>captioner API</title>
<link rel="icon" href="static/{page}/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="docs/static/{swagger}/swagger-ui.css">
<link rel="stylesheet" href="static/{page}/docs.css">
</head>
<body>
<nav class="docs-bar"><a href="./">&larr; captioner: caption images on the web page</a></nav>
<div id="swagger-ui" data-openapi-url="openapi.json"></div>
<script src="docs/static/{swagger}/swagger-ui-bundle.js"></script>
<script src="static/{page}/docs.js"></script>
</body>
</html>
"""


_OBJECT = {"application/json": {"schema": {"type": "object"}}}


@router.get(
    "/swagger.json",
    response_class=JSONResponse,
    responses={200: {"description": "A Swagger 2.0 document.", "content": _OBJECT}},
)
async def swagger(request: Request) -> JSONResponse:
    """The ``/model/*`` routes as a Swagger 2.0 document, as MAX served it."""
    if not hasattr(request.app.state, "swagger"):
        request.app.state.swagger = swagger_document(request.app.openapi())
    # Exactly application/json, no charset: MAX's test suite compares the header.
    return JSONResponse(request.app.state.swagger, media_type="application/json")


@router.get("/docs", include_in_schema=False, response_class=HTMLResponse)
def docs() -> HTMLResponse:
    """The interactive API documentation (Swagger UI over ``/openapi.json``)."""
    html = _DOCS_HTML.format(page=page_bundle().digest, swagger=swagger_bundle().digest)
    return html_response(html)


@router.get("/docs/static/{digest}/{name}", include_in_schema=False)
def docs_asset(request: Request, digest: str, name: str) -> Response:
    """Swagger UI's script and stylesheet, cached for a year under their digest."""
    return swagger_bundle().response(request, digest, name)
