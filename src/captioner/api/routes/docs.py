"""MAX's documentation routes: ``GET /swagger.json`` (Swagger 2.0) and ``GET /`` (to the docs)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse

from captioner.api.swagger import swagger_document

__all__ = ["router"]

router = APIRouter(tags=["operations"])


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


@router.get("/", include_in_schema=False)
async def root(request: Request) -> RedirectResponse:
    """MAX served its Swagger UI at ``/``; ours is at ``/docs``."""
    return RedirectResponse(request.scope.get("root_path", "") + "/docs")
