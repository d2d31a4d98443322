"""The one captioning loop: order, a bad image failing alone, reading ahead but bounded."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from captioner.errors import InvalidRequestError
from captioner.pipeline import ImageSource, caption_batch, caption_batches, caption_stream
from support.fake_engine import PALETTE, FakeEngine, png_bytes

COLOURS = list(PALETTE)


def _named(colours: list[str]) -> list[tuple[str, bytes]]:
    return [(f"{i}-{c}", png_bytes(c)) for i, c in enumerate(colours)]


def test_results_keep_input_order_and_names_across_batches() -> None:
    colours = [COLOURS[i % len(COLOURS)] for i in range(23)]
    results = list(caption_stream(FakeEngine(), _named(colours), batch_size=4))
    assert [r.source for r in results] == [f"{i}-{c}" for i, c in enumerate(colours)]
    assert [r.captions[0].text.split()[1] for r in results] == colours


def test_batches_are_engine_calls_of_batch_size() -> None:
    engine = FakeEngine()
    batches = list(caption_batches(engine, _named(["red"] * 10), batch_size=4))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert [size for size in engine.batch_sizes if size] == [4, 4, 2]


def test_a_stream_is_captioned_sixteen_at_a_time_unless_told() -> None:
    # Not the server's 8: a batch of 16 searches in about the time of 8 (see the constant).
    engine = FakeEngine()
    results = list(caption_stream(engine, _named(["red"] * 20)))
    assert len(results) == 20
    assert [size for size in engine.batch_sizes if size] == [16, 4]


def test_a_bad_image_fails_alone_with_its_reason(tmp_path: Path) -> None:
    sources = [
        ("good-red", png_bytes("red")),
        ("text", b"hello, not an image"),
        ("empty", b""),
        ImageSource(name="missing.png", path=tmp_path / "missing.png"),
        ("good-blue", png_bytes("blue")),
    ]
    results = caption_batch(FakeEngine(), sources)
    assert [r.ok for r in results] == [True, False, False, False, True]
    assert (results[1].error or "").startswith("the data is not a supported image")
    assert results[2].error == "the image is empty (0 bytes)"
    assert results[3].error == "No such file or directory"
    assert results[4].captions[0].text.startswith("a blue")


def test_an_unexpected_decoder_error_is_that_images_error() -> None:
    class Exploding(FakeEngine):
        def preprocess(self, image: bytes):  # type: ignore[no-untyped-def]
            if image == b"boom":
                raise ZeroDivisionError("a bug in a decoder")
            return super().preprocess(image)

    results = caption_batch(Exploding(), [("a", b"boom"), ("b", png_bytes("red"))])
    assert results[0].error is not None and "ZeroDivisionError" in results[0].error
    assert results[1].ok


def test_paths_are_named_as_given(tmp_path: Path) -> None:
    (tmp_path / "red.png").write_bytes(png_bytes("red"))
    (result,) = caption_batch(FakeEngine(), [tmp_path / "red.png"])
    assert result.source == str(tmp_path / "red.png") and result.ok


def test_bad_search_parameters_are_refused_before_reading() -> None:
    read = 0

    def sources() -> Iterator[tuple[str, bytes]]:
        nonlocal read
        read += 1
        yield ("x", png_bytes("red"))

    with pytest.raises(InvalidRequestError):
        next(caption_batches(FakeEngine(), sources(), beam_size=0))
    assert read == 0


def test_reading_ahead_is_bounded_and_lazy() -> None:
    """An endless stream: the reader stays at most ``prefetch`` batches (plus the one it
    is decoding and the one being captioned) ahead of the engine."""
    taken = 0

    def endless() -> Iterator[tuple[str, bytes]]:
        nonlocal taken
        image = png_bytes("green")
        for i in itertools.count():
            taken += 1
            yield (str(i), image)

    engine = FakeEngine(gate=threading.Event())
    stream = caption_batches(engine, endless(), batch_size=5, prefetch=2)
    first = threading.Thread(target=lambda: next(stream))
    first.start()
    assert engine.entered.wait(5)  # the engine is inside its first (real) batch, held
    # Wait until the reader is blocked: its count stops moving.
    previous = -1
    while previous != taken:
        previous = taken
        threading.Event().wait(0.3)
    assert taken <= 5 * (1 + 2 + 1)
    engine.gate.set()  # type: ignore[union-attr]
    first.join(5)
    stream.close()  # the reader stops
    stopped_at = taken
    threading.Event().wait(0.3)
    assert taken == stopped_at


def test_an_error_while_listing_reaches_the_caller() -> None:
    def broken() -> Iterator[tuple[str, bytes]]:
        yield ("a", png_bytes("red"))
        raise PermissionError("cannot list the folder")

    with pytest.raises(PermissionError, match="cannot list"):
        list(caption_stream(FakeEngine(), broken(), batch_size=1))
