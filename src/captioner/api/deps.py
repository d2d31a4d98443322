"""Request dependencies: the app's settings and model service, and validated decoding knobs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request

from captioner.api.service import ModelService
from captioner.beam_search import MIN_MAX_LENGTH
from captioner.config import Settings
from captioner.errors import InvalidRequestError

__all__ = ["SearchParams", "SearchParamsDep", "ServiceDep", "SettingsDep", "search_bounds"]


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _service(request: Request) -> ModelService:
    return request.app.state.service  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(_settings)]
ServiceDep = Annotated[ModelService, Depends(_service)]


@dataclass(frozen=True)
class SearchParams:
    """The beam search parameters of one request, within the server's bounds."""

    beam_size: int
    max_length: int


def search_bounds(settings: Settings) -> dict[str, tuple[int, int, int]]:
    """Each beam search parameter's smallest, default and largest value.

    One table for the check below, the OpenAPI document's bounds and ``/limits``.
    """
    return {
        "beam_size": (1, settings.default_beam_size, settings.max_beam_size),
        "max_length": (MIN_MAX_LENGTH, settings.default_max_length, settings.max_max_length),
    }


def _bounded(name: str, value: int | None, bounds: dict[str, tuple[int, int, int]]) -> int:
    lower, default, upper = bounds[name]
    if value is None:
        return default
    if not lower <= value <= upper:
        raise InvalidRequestError(
            f"{name} must be between {lower} and {upper}, got {value}", field=name
        )
    return value


def _search_params(
    settings: SettingsDep,
    beam_size: Annotated[
        int | None,
        Query(description="Beam width, also the most captions returned."),
    ] = None,
    max_length: Annotated[
        int | None,
        Query(
            description="Longest caption in tokens, counting the start and end tokens `<S>` "
            f"and `</S>`: at most max_length - 2 words, so at least {MIN_MAX_LENGTH}."
        ),
    ] = None,
) -> SearchParams:
    bounds = search_bounds(settings)
    return SearchParams(
        beam_size=_bounded("beam_size", beam_size, bounds),
        max_length=_bounded("max_length", max_length, bounds),
    )


SearchParamsDep = Annotated[SearchParams, Depends(_search_params)]
