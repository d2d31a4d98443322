"""``GET /limits``: the server's bounds on uploads and decoding, for clients to check first."""

from __future__ import annotations

from fastapi import APIRouter

from captioner.api.deps import SettingsDep, search_bounds
from captioner.api.schemas import ServerLimits

__all__ = ["router"]

router = APIRouter(tags=["operations"])


@router.get("/limits", response_model=ServerLimits)
async def limits(settings: SettingsDep) -> ServerLimits:
    """Upload sizes, pixel count, files per batch request, beam size and length bounds.

    Answers while the model is still loading, unlike ``/model/metadata``.
    """
    fields = {name for name in ServerLimits.model_fields if name != "min_max_length"}
    lower, _, _ = search_bounds(settings)["max_length"]
    return ServerLimits(min_max_length=lower, **{name: getattr(settings, name) for name in fields})
