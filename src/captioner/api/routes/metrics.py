"""``GET /metrics``: the Prometheus text exposition of this app's registry."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

__all__ = ["router"]

router = APIRouter(tags=["operations"])


_TEXT = {"text/plain": {"schema": {"type": "string"}}}


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"description": "The Prometheus text format.", "content": _TEXT}},
)
async def metrics(request: Request) -> Response:
    """Request counts, rejections, batch sizes, queue wait and depth, inference time."""
    payload, content_type = request.app.state.metrics.render()
    return Response(payload, media_type=content_type)
