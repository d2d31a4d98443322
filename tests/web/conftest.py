"""Fixtures of the browser tests (the plumbing is in ``browsing.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

from web.browsing import CHROMIUM_ARGS, Browsing, browse, chromium, serve


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server most tests use: the demo model, a 300 kB upload limit."""
    yield from serve(tmp_path_factory)


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    executable = chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def desktop(browser: Browser, server: str) -> Iterator[Browsing]:
    """A 1280x900 window, allowed to use the clipboard."""
    yield from browse(
        browser,
        server,
        viewport={"width": 1280, "height": 900},
        permissions=["clipboard-read", "clipboard-write"],
    )


@pytest.fixture
def phone(browser: Browser, server: str) -> Iterator[Browsing]:
    """A phone-sized window: 390x844 CSS pixels, touch, two device pixels per CSS pixel."""
    yield from browse(
        browser,
        server,
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
