"""The web page against a server started with ``--api-key-file``: it asks for the key,
sends it, asks again when the server refuses it, and keeps it for the tab only."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from web.browsing import Browsing, browse, serve
from web.scenes import SCENES, scene_png
from web.test_page import CAPTION_TIMEOUT_MS, card, png_file, sentence

pytestmark = pytest.mark.slow

KEY = "page-key-5e0b7c2d91"
KEY_ITEM = "captioner.apiKey"  # the sessionStorage entry the page keeps the key in
RED = next(iter(SCENES))


@pytest.fixture(scope="module")
def locked_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    keys = tmp_path_factory.mktemp("keys") / "keys"
    keys.write_text(f"# the web page's key\n{KEY}\n")
    yield from serve(tmp_path_factory, "--api-key-file", str(keys))


@pytest.fixture
def locked(browser: Browser, locked_server: str) -> Iterator[Browsing]:
    for browsing in browse(browser, locked_server, viewport={"width": 1280, "height": 900}):
        browsing.allow_console_error("status of 401")  # Chromium logs every refused request
        yield browsing


def with_key(base: str, path: str, **kwargs: Any) -> httpx.Response:
    response = httpx.request(
        kwargs.pop("method", "GET"),
        f"{base}{path}",
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=30,
        **kwargs,
    )
    assert response.status_code == 200, response.text
    return response


def prompt(page: Page) -> Locator:
    return page.get_by_role("dialog", name="API key needed")


def enter(page: Page, key: str) -> None:
    page.get_by_label("API key", exact=True).fill(key)
    prompt(page).get_by_role("button", name="Use this key").click()


def expect_ready(page: Page, base: str) -> None:
    name = with_key(base, "/model/metadata").json()["name"]
    expect(page.locator("#model-text")).to_have_text(f"Model: {name}")
    expect(page.locator("#limits")).to_contain_text("per image")


def test_the_page_asks_for_the_key_and_asks_again_for_a_wrong_one(locked: Browsing) -> None:
    page = locked.open()
    dialog = prompt(page)
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("This server asks for an API key before it captions images")
    expect(page.get_by_label("API key", exact=True)).to_be_focused()
    expect(page.get_by_label("API key", exact=True)).to_have_attribute("type", "password")
    locked.screenshot("key-prompt", full_page=False)

    enter(page, "not-the-key")
    expect(dialog).to_contain_text("The server did not accept that key. Check it and enter it")
    expect(page.get_by_label("API key", exact=True)).to_have_value("")
    locked.screenshot("key-prompt-wrong", full_page=False)

    enter(page, KEY)
    expect(dialog).to_be_hidden()
    expect_ready(page, locked.base)
    page.set_input_files("#file-input", [png_file(RED)])
    files = {"image": (RED, scene_png(RED), "image/png")}
    answer = with_key(locked.base, "/model/predict", method="POST", files=files)
    expect(card(page, RED).locator(".caption")).to_have_text(
        sentence(answer.json()["predictions"][0]["caption"]), timeout=CAPTION_TIMEOUT_MS
    )


def test_the_key_lasts_for_the_tab_only(locked: Browsing) -> None:
    page = locked.open()
    enter(page, KEY)
    expect_ready(page, locked.base)
    assert page.evaluate(f"sessionStorage.getItem('{KEY_ITEM}')") == KEY
    assert page.evaluate("localStorage.length") == 0
    assert KEY not in str(page.context.cookies())

    page.reload()  # the same tab: no question
    expect_ready(page, locked.base)
    expect(prompt(page)).to_be_hidden()

    other = page.context.new_page()  # another tab of the same browser: asked again
    other.goto(locked.base + "/")
    expect(prompt(other)).to_be_visible()
    assert other.evaluate(f"sessionStorage.getItem('{KEY_ITEM}')") is None


def test_a_closed_prompt_leaves_a_way_to_enter_the_key(locked: Browsing) -> None:
    page = locked.open()
    prompt(page).get_by_role("button", name="Cancel").click()
    expect(prompt(page)).to_be_hidden()
    expect(page.locator("#model-text")).to_have_text("API key needed")
    expect(page.locator("#notice")).to_contain_text("This server needs an API key")
    page.get_by_role("button", name="Enter API key").click()
    enter(page, KEY)
    expect_ready(page, locked.base)


def test_a_server_without_keys_never_asks(desktop: Browsing) -> None:
    page = desktop.open()
    name = httpx.get(f"{desktop.base}/model/metadata").json()["name"]
    expect(page.locator("#model-text")).to_have_text(f"Model: {name}")
    expect(prompt(page)).to_be_hidden()
    assert page.evaluate(f"sessionStorage.getItem('{KEY_ITEM}')") is None
