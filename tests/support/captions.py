"""Captions of image bytes through the pipeline, for tests that compare models or settings."""

from __future__ import annotations

from collections.abc import Sequence

from captioner.batching import Engine
from captioner.pipeline import caption_batch
from captioner.results import Caption


def captions_of(
    engine: Engine, images: Sequence[bytes], *, beam_size: int = 3, max_length: int = 20
) -> list[list[Caption]]:
    """Each image's ranked captions, in one engine call; every image must decode."""
    named = [(f"image {i}", image) for i, image in enumerate(images)]
    results = caption_batch(engine, named, beam_size=beam_size, max_length=max_length)
    failed = [f"{r.source}: {r.error}" for r in results if not r.ok]
    assert not failed, failed
    return [list(r.captions) for r in results]
