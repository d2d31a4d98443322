"""``GET /limits``: the server's bounds on uploads and decoding, for clients to check first."""

from __future__ import annotations

from fastapi import APIRouter

from captioner.api.deps import SettingsDep
from captioner.api.schemas import ServerLimits

__all__ = ["router"]

router = APIRouter(tags=["operations"])


@router.get("/limits", response_model=ServerLimits)
async def limits(settings: SettingsDep) -> ServerLimits:
    """Upload size, pixel count, files per batch request, beam size and length bounds.

    Answers while the model is still loading, unlike ``/model/metadata``.
    """
    return ServerLimits(
        **{name: getattr(settings, name) for name in ServerLimits.model_fields},
    )
