"""Liveness and readiness probes, at the paths KServe and Triton use (``/v2/health/*``)."""

from __future__ import annotations

import math

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from captioner.api.deps import ServiceDep
from captioner.api.errors import NOT_READY_RETRY_AFTER_S, RETRY_AFTER_HEADER, error_body
from captioner.api.schemas import Liveness, NotReady, Readiness

__all__ = ["router"]

router = APIRouter(prefix="/v2/health", tags=["health"])


@router.get("/live", response_model=Liveness)
async def live() -> Liveness:
    """200 while the process answers; never touches the model."""
    return Liveness()


@router.get(
    "/ready",
    response_model=Readiness,
    responses={
        503: {
            "model": NotReady,
            "description": "Loading, draining or failed.",
            "headers": RETRY_AFTER_HEADER,
        }
    },
)
async def ready(request: Request, service: ServiceDep) -> JSONResponse:
    """200 only when the model is loaded and the server is not draining.

    The 200 body also says the precision the model runs in (``fp32`` or ``bf16``).
    """
    if service.ready:
        return JSONResponse({"ready": True, "precision": service.info.precision})
    request.state.error_reason = "not_ready"
    body = {"ready": False, **error_body(service.not_ready_reason)}
    retry_after = {"Retry-After": str(math.ceil(NOT_READY_RETRY_AFTER_S))}
    return JSONResponse(body, status_code=503, headers=retry_after)
