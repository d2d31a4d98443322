"""The web page: ``GET /`` (drop images, read captions, export alt text) and its files.

The page is plain HTML, CSS and JavaScript modules shipped in the package; it talks only
to this server's API (``/limits``, ``/model/*``, ``/v2/health/ready``). The routes are
plain functions: the first call reads the files, which FastAPI then does off the event loop.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from captioner.api.static import html_response, page_bundle, page_template

__all__ = ["router"]

router = APIRouter()


@router.get("/", include_in_schema=False, response_class=HTMLResponse)
def page() -> HTMLResponse:
    """The web page (MAX served Swagger UI here; the API docs are at ``/docs``)."""
    html = page_template("index.html").replace("{{ assets }}", f"static/{page_bundle().digest}")
    return html_response(html)


@router.get("/static/{digest}/{name}", include_in_schema=False)
def asset(request: Request, digest: str, name: str) -> Response:
    """The page's scripts, styles and icon, cached for a year under their digest."""
    return page_bundle().response(request, digest, name)
