"""The page's pure modules (words, downloads, formatting), run in Chromium by importing
them from the server, as the page does: the edge cases the page-level tests do not reach."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest

from web.browsing import Browsing

pytestmark = pytest.mark.slow


def run(browsing: Browsing, module: str, expression: str, argument: Any = None) -> Any:
    """Evaluate ``expression`` with the module's exports as ``m`` and ``argument`` as ``a``."""
    page = browsing.page
    script = page.locator('script[type="module"]').get_attribute("src")
    assert script is not None
    base = script.rsplit("/", 1)[0]
    return page.evaluate(
        f"async (a) => {{ const m = await import('./{base}/{module}'); return {expression}; }}",
        argument,
    )


@pytest.fixture
def page_modules(desktop: Browsing) -> Browsing:
    desktop.open()
    return desktop


def test_csv_quotes_what_needs_quoting_and_defuses_formulas(page_modules: Browsing) -> None:
    results = [
        {
            "image": 'beach, "sunset".jpg',
            "beam_size": 2,
            "max_length": 20,
            "predictions": [
                {"caption": "a dog on a couch .", "probability": 0.25, "logprob": -1.386},
                {"caption": "a dog ,\nsleeping", "probability": 1e-300, "logprob": -690.7},
            ],
        },
        {
            "image": "=HYPERLINK(evil).png",
            "beam_size": 1,
            "max_length": 20,
            "predictions": [{"caption": "-dash", "probability": 0.5, "logprob": -0.693}],
        },
    ]
    text = run(page_modules, "export.js", "m.toCSV(a)", results)
    assert text.endswith("\r\n")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows == [
        ["image", "rank", "caption", "probability", "logprob"],
        ['beach, "sunset".jpg', "1", "a dog on a couch .", "0.25", "-1.386"],
        ['beach, "sunset".jpg', "2", "a dog ,\nsleeping", "1e-300", "-690.7"],
        ["'=HYPERLINK(evil).png", "1", "'-dash", "0.5", "-0.693"],  # text, not formulas
    ]
    document = run(page_modules, "export.js", "JSON.parse(m.toJSON(a, null))", results)
    assert document["model"] is None
    assert document["images"][0]["captions"][1]["probability"] == 1e-300


def test_words_drop_stop_words_and_match_whole_words_only(page_modules: Browsing) -> None:
    captions = ["a cat on a car .", "a car next to a cart .", "The CAR is red"]
    ranked = run(page_modules, "words.js", "m.rankWords(a)", captions)
    assert ranked == [
        {"word": "car", "count": 3},
        {"word": "cart", "count": 1},
        {"word": "cat", "count": 1},
        {"word": "red", "count": 1},
    ]
    matches = run(
        page_modules, "words.js", "a.map((c) => m.hasWord(c, 'car'))", ["a cart .", "a car ."]
    )
    assert matches == [False, True]


def test_captions_read_as_sentences_and_numbers_as_people_write_them(
    page_modules: Browsing,
) -> None:
    assert run(page_modules, "format.js", "m.sentence(a)", "a dog on a couch .") == (
        "A dog on a couch."
    )
    percents = run(
        page_modules, "format.js", "a.map(m.formatPercent)", [0.9539, 0.0388, 0.00042, 1e-9, 0]
    )
    assert percents == ["95.4 %", "3.9 %", "0.042 %", "< 0.001 %", "0 %"]
    sizes = run(page_modules, "format.js", "a.map(m.formatBytes)", [512, 300_000, 10 * 1024 * 1024])
    assert sizes == ["512 bytes", "293 KiB", "10 MiB"]
