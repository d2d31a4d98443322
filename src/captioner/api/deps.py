"""Request dependencies: the app's settings and model service, and validated decoding knobs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request

from captioner.api.service import ModelService
from captioner.config import Settings
from captioner.errors import InvalidRequestError

__all__ = ["DecodeParams", "DecodeParamsDep", "ServiceDep", "SettingsDep"]


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _service(request: Request) -> ModelService:
    return request.app.state.service  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(_settings)]
ServiceDep = Annotated[ModelService, Depends(_service)]


@dataclass(frozen=True)
class DecodeParams:
    """Beam search knobs of one request, within the server's bounds."""

    beam_size: int
    max_length: int


def _bounded(name: str, value: int | None, default: int, upper: int) -> int:
    if value is None:
        return default
    if not 1 <= value <= upper:
        raise InvalidRequestError(f"{name} must be between 1 and {upper}, got {value}", field=name)
    return value


def _decode_params(
    settings: SettingsDep,
    beam_size: Annotated[
        int | None,
        Query(description="Beam width, also the most captions returned (1 to max_beam_size)."),
    ] = None,
    max_length: Annotated[
        int | None,
        Query(description="Longest caption in words, end word included (1 to max_max_length)."),
    ] = None,
) -> DecodeParams:
    return DecodeParams(
        beam_size=_bounded(
            "beam_size", beam_size, settings.default_beam_size, settings.max_beam_size
        ),
        max_length=_bounded(
            "max_length", max_length, settings.default_max_length, settings.max_max_length
        ),
    )


DecodeParamsDep = Annotated[DecodeParams, Depends(_decode_params)]
