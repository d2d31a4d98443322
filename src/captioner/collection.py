"""A collection run from start to finish: skip what is recorded, write, show progress, sum up.

The results may come from the engine in this process (:func:`captioner.pipeline.
caption_batches`) or from servers through the client (:func:`in_chunks` of its results);
either way this module writes each batch, makes it durable, advances the progress bar and
counts, so that both ways behave the same: the same output, the same resume, the same
summary line, the same exit status.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from captioner.outputs import Recorded, ResultWriter
from captioner.pipeline import ImageSource
from captioner.results import ImageResult

__all__ = ["Progress", "Summary", "in_chunks", "run_collection", "skip_recorded"]


@dataclass
class Summary:
    """What a run did.

    Attributes:
        captioned, failed: images this run captioned, and those it recorded an error for.
        skipped: images already recorded in the output (a resumed run).
        skipped_failed: of those, how many had an error row.
        seconds: wall time of the captioning (after the model was loaded).
        interrupted: stopped early by Ctrl-C; a rerun with resume finishes it.
        extra: other counts to report (metadata written, ...), by name.
    """

    captioned: int = 0
    failed: int = 0
    skipped: int = 0
    skipped_failed: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    extra: Counter[str] = field(default_factory=Counter)

    @property
    def images_per_s(self) -> float:
        """Images this run handled (captioned or failed) per second."""
        done = self.captioned + self.failed
        return done / self.seconds if self.seconds > 0 else 0.0

    @property
    def all_captioned(self) -> bool:
        """No image of the collection has an error row, this run's or an earlier one's."""
        return self.failed == 0 and self.skipped_failed == 0

    def line(self) -> str:
        """One line for the end of a run."""
        skipped = f"skipped {self.skipped} already recorded"
        if self.skipped_failed:
            skipped += f" ({self.skipped_failed} of them failed)"
        extras = "".join(f", {name} {count}" for name, count in sorted(self.extra.items()))
        return (
            f"captioned {self.captioned}, failed {self.failed}, {skipped}{extras} "
            f"in {self.seconds:.1f} s ({self.images_per_s:.1f} images/s)"
        )


def skip_recorded(
    sources: Iterable[ImageSource], recorded: Recorded, summary: Summary
) -> Iterator[ImageSource]:
    """The sources the output does not record yet, each name once.

    Those recorded are counted as skipped; a name listed twice in one run (a directory
    and a pattern that both reach a file) is captioned once and counted as listed twice.
    """
    seen: set[str] = set()
    for source in sources:
        if source.name in recorded.sources:
            summary.skipped += 1
            summary.skipped_failed += not recorded.sources[source.name]
        elif source.name in seen:
            summary.extra["listed twice"] += 1
        else:
            seen.add(source.name)
            yield source


def in_chunks(results: Iterable[ImageResult], size: int) -> Iterator[list[ImageResult]]:
    """Results that arrive one at a time (from servers) as lists of ``size``, to write and
    flush together like an engine's batch."""
    items = iter(results)
    while chunk := list(itertools.islice(items, size)):
        yield chunk


class Progress:
    """A progress bar on stderr (tqdm): images done, of the total once counted, images/s,
    errors so far, time left. Off unless ``enabled``.

    The total is counted on a background thread by ``count`` (a second pass over the
    listing; ``None`` when the listing cannot be read twice, such as standard input),
    so the first images are captioned without waiting for a million files to be listed.
    """

    def __init__(self, *, enabled: bool, count: Callable[[], int] | None = None) -> None:
        from tqdm import tqdm

        self._bar: Any = tqdm(
            total=None, unit="image", file=sys.stderr, disable=not enabled, dynamic_ncols=True
        )
        self._errors = 0
        if enabled and count is not None:
            threading.Thread(target=self._set_total, args=(count,), daemon=True).start()

    def _set_total(self, count: Callable[[], int]) -> None:
        self._bar.total = count()
        self._bar.refresh()

    def advance(self, batch: Sequence[ImageResult]) -> None:
        """Count a written batch."""
        errors = sum(not result.ok for result in batch)
        if errors:
            self._errors += errors
            self._bar.set_postfix(errors=self._errors, refresh=False)
        self._bar.update(len(batch))

    def close(self) -> None:
        self._bar.close()


def run_collection(
    batches: Iterable[Sequence[ImageResult]],
    writer: ResultWriter,
    summary: Summary,
    *,
    progress: Progress | None = None,
    after_write: Callable[[ImageResult], str | None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Summary:
    """Write every batch, durable before the next, until the stream ends or ``should_stop``.

    Args:
        batches: the results, a batch at a time.
        writer: where they go; closed at the end, also on an error or an interrupt.
        summary: counts so far (the skipped ones); filled in and returned.
        progress: advanced after each batch.
        after_write: called for each captioned image once written (metadata writing);
            what it returns, if anything, is counted in ``summary.extra``.
        should_stop: checked after each batch: True ends the run early (Ctrl-C), the
            batch in flight written.
    """
    started = time.monotonic()
    stream = iter(batches)
    try:
        for batch in stream:
            for result in batch:
                writer.write(result)
                if result.ok:
                    summary.captioned += 1
                else:
                    summary.failed += 1
            writer.flush()
            if after_write is not None:
                for result in batch:
                    if result.ok and (outcome := after_write(result)):
                        summary.extra[outcome] += 1
            if progress is not None:
                progress.advance(batch)
            if should_stop():
                summary.interrupted = True
                break
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()  # stops reading ahead
        writer.close()
        if progress is not None:
            progress.close()
        summary.seconds = time.monotonic() - started
    return summary
