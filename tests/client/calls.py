"""Either client behind one face: the same scenario runs on :class:`Client` and on
:class:`AsyncClient` (driven by an event loop of the test's own)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from captioner.client import AsyncClient, CaptionResult, Client, ImageResult, ModelMetadata

__all__ = ["KINDS", "Calls", "open_client"]

KINDS = ["sync", "async"]


class Calls:
    """What a test calls, whichever client is behind it (``caption_many`` gives a list)."""

    def __init__(self, client: Client | AsyncClient, loop: asyncio.AbstractEventLoop | None):
        self.client = client
        self._loop = loop

    def _run(self, call: Any) -> Any:
        return call if self._loop is None else self._loop.run_until_complete(call)

    def caption(self, image: Any, **options: Any) -> CaptionResult:
        return self._run(self.client.caption(image, **options))

    def caption_many(self, images: Iterable[Any], **options: Any) -> list[ImageResult]:
        results = self.client.caption_many(images, **options)
        if self._loop is None:
            return list(results)
        return self._loop.run_until_complete(_collect(results))

    def metadata(self) -> ModelMetadata:
        return self._run(self.client.metadata())

    def ready(self) -> bool:
        return self._run(self.client.ready())


async def _collect(results: AsyncIterable[ImageResult]) -> list[ImageResult]:
    return [result async for result in results]


@contextmanager
def open_client(kind: str, base_url: str | list[str], **options: Any) -> Iterator[Calls]:
    """A :class:`Client` (``kind`` "sync") or an :class:`AsyncClient` ("async")."""
    if kind == "sync":
        with Client(base_url, **options) as client:
            yield Calls(client, None)
        return
    loop = asyncio.new_event_loop()
    client = AsyncClient(base_url, **options)
    try:
        yield Calls(client, loop)
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()
