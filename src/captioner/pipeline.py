"""Caption a stream of images: the one loop every caller uses.

A collection is an iterable of sources (paths, or named bytes) of any length. It is read
lazily, in batches: a background thread reads and decodes the next batch while the engine
runs the current one, and at most ``prefetch`` decoded batches wait between the two, so
memory stays flat however long the stream is. Each image is decoded on its own: one that
cannot be read or decoded becomes an error result with its reason, and the rest of its
batch is still captioned. Results come back in input order, each under its source's name,
so a caption can never land on the wrong file.

``captioner caption``, ``captioner evaluate`` and the Ray actors all caption through here;
the server's batcher (:mod:`captioner.batching`) is the one other loop, because it
stacks concurrent requests rather than reading a stream.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

from captioner.errors import CaptionerError
from captioner.results import ImageResult

if TYPE_CHECKING:
    import numpy as np

    from captioner.batching import Engine

__all__ = [
    "COLLECTION_BATCH_SIZE",
    "ImageSource",
    "Source",
    "caption_batch",
    "caption_batches",
    "caption_stream",
]

logger = logging.getLogger(__name__)

# Images per engine call for a collection. The beam search reads the decoder's word matrix
# (24 MB at full size) once per step for the whole batch, so a batch of 16 searches in about
# the time of a batch of 8, and the encoder too runs a little faster per image: more
# images/s (docs/performance.md, "Collections"), for TensorFlow's buffers for twice the
# images at the peak. The server keeps batches of 8: its requests wait for company.
COLLECTION_BATCH_SIZE = 16

# Decoded pixels are float32 or, for an image that failed, the reason. (NumPy is imported
# where it is used: the command line reads this module's batch size at start.)
_Decoded = tuple[str, Union["np.ndarray", str]]


@dataclass(frozen=True)
class ImageSource:
    """An image to caption and the name its result carries: a file, or bytes in hand.

    Attributes:
        name: what the result's ``source`` says (the path as listed, or a key).
        path: the file to read, when ``data`` is not given.
        data: the image's bytes, when already in memory.
    """

    name: str
    path: Path | None = None
    data: bytes | None = None

    def read(self) -> bytes:
        """The image's bytes (read from ``path`` now, when not in memory)."""
        if self.data is not None:
            return self.data
        if self.path is None:
            raise ValueError(f"the source {self.name!r} has neither data nor a path")
        return self.path.read_bytes()

    @classmethod
    def of(cls, item: Source) -> ImageSource:
        """A source from a path (named as given) or a ``(name, bytes)`` pair."""
        if isinstance(item, ImageSource):
            return item
        if isinstance(item, tuple):
            name, data = item
            return cls(name=name, data=data)
        return cls(name=os.fspath(item), path=Path(item))


# What the functions below accept for one image.
Source = Union[ImageSource, str, "os.PathLike[str]", tuple[str, bytes]]


def caption_batch(
    engine: Engine, images: Sequence[Source], *, beam_size: int = 3, max_length: int = 20
) -> list[ImageResult]:
    """Caption a few images in one engine call, each bad one failing alone.

    Args:
        engine: the loaded model (:class:`captioner.engine.Captioner`, or any ``Engine``).
        images: paths or ``(name, bytes)`` pairs.
        beam_size, max_length: the search parameters (see ``Captioner.caption_arrays``).

    Returns:
        One result per image, in order.

    Raises:
        InvalidRequestError: ``beam_size`` or ``max_length`` out of range.
    """
    engine.check_parameters(beam_size, max_length)
    decoded = [_decode(engine, ImageSource.of(image)) for image in images]
    return _caption_decoded(engine, decoded, beam_size, max_length)


def caption_batches(
    engine: Engine,
    sources: Iterable[Source],
    *,
    beam_size: int = 3,
    max_length: int = 20,
    batch_size: int = COLLECTION_BATCH_SIZE,
    prefetch: int = 2,
    decode_threads: int | None = None,
) -> Iterator[list[ImageResult]]:
    """Caption a stream, one list of results per engine call, in input order.

    The sources are read on a background thread, ``batch_size`` at a time, and decoded
    there (on ``decode_threads`` threads) while the engine runs the batch before;
    at most ``prefetch`` decoded batches wait. Closing the iterator early stops the
    reading. The search parameters are checked before anything is read.

    Raises:
        InvalidRequestError: ``beam_size`` or ``max_length`` out of range.
        Whatever iterating ``sources`` raises, and engine failures (not a bad image's).
    """
    if batch_size < 1 or prefetch < 1:
        raise ValueError("batch_size and prefetch must be at least 1")
    engine.check_parameters(beam_size, max_length)
    threads = decode_threads or min(batch_size, os.cpu_count() or 1, 4)
    ready: queue.Queue[list[_Decoded] | BaseException | None] = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def hand_over(item: list[_Decoded] | BaseException | None) -> None:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read_and_decode() -> None:
        try:
            with ThreadPoolExecutor(threads, thread_name_prefix="captioner-decode") as pool:
                for chunk in _chunks(sources, batch_size):
                    if stop.is_set():
                        return
                    hand_over(list(pool.map(lambda s: _decode(engine, s), chunk)))
            hand_over(None)
        except BaseException as exc:  # handed to the caller's thread, raised there
            hand_over(exc)

    reader = threading.Thread(target=read_and_decode, name="captioner-read", daemon=True)
    reader.start()
    try:
        while (item := ready.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield _caption_decoded(engine, item, beam_size, max_length)
    finally:
        stop.set()
        reader.join()


def caption_stream(
    engine: Engine, sources: Iterable[Source], **options: int | None
) -> Iterator[ImageResult]:
    """:func:`caption_batches`, one result at a time (same options)."""
    for batch in caption_batches(engine, sources, **options):  # type: ignore[arg-type]
        yield from batch


def _chunks(sources: Iterable[Source], size: int) -> Iterator[list[ImageSource]]:
    """The sources as ``ImageSource`` lists of ``size`` (the last may be shorter), lazily."""
    items = (ImageSource.of(source) for source in sources)
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def _decode(engine: Engine, source: ImageSource) -> _Decoded:
    """Read and preprocess one image; a failure becomes its reason, never an exception.

    Anything the decoder raises is this image's problem, not the collection's: a long
    run must not end because one file is strange. Unexpected errors name their type.
    """
    try:
        return source.name, engine.preprocess(source.read())
    except OSError as exc:
        return source.name, exc.strerror or str(exc)
    except CaptionerError as exc:
        return source.name, str(exc)
    except Exception as exc:
        logger.debug("decoding %s failed", source.name, exc_info=True)
        return source.name, f"could not decode the image ({type(exc).__name__}: {exc})"


def _caption_decoded(
    engine: Engine, decoded: list[_Decoded], beam_size: int, max_length: int
) -> list[ImageResult]:
    """One engine call for the decoded images; results for all, in order."""
    import numpy as np

    good = [pixels for _, pixels in decoded if not isinstance(pixels, str)]
    ranked = iter(engine.caption_arrays(np.stack(good), beam_size, max_length) if good else [])
    return [
        ImageResult(name, error=pixels)
        if isinstance(pixels, str)
        else ImageResult(name, captions=tuple(next(ranked)))
        for name, pixels in decoded
    ]
