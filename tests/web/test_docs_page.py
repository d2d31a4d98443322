"""``/docs`` in Chromium with every request outside the server refused: Swagger UI loads
from the server itself and renders the caption route (it was blank offline with a CDN)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from web.browsing import Browsing

pytestmark = pytest.mark.slow


def test_docs_render_the_caption_route_without_the_network(desktop: Browsing) -> None:
    page = desktop.open("/docs")
    predict = page.locator(".opblock-post").filter(
        has=page.locator(".opblock-summary-path", has_text="/model/predict")
    )
    expect(predict.first).to_be_visible(timeout=30_000)
    expect(page.locator(".opblock-summary-path")).to_contain_text(
        ["/model/metadata", "/model/predict", "/model/predict/batch"]
    )
    # Opening the operation shows its parameters, read from /openapi.json; the tokens <S>
    # and </S> read as text, not as a struck-through tag.
    predict.first.locator(".opblock-summary").click()
    parameters = predict.first.locator("table.parameters")
    expect(parameters).to_contain_text("beam_size")
    expect(parameters).to_contain_text("counting the start and end tokens <S> and </S>")
    assert parameters.locator("s").count() == 0
    desktop.screenshot("docs", full_page=False)

    # And it can call the API: "Try it out" on the metadata route.
    metadata = page.locator(".opblock-get").filter(
        has=page.locator(".opblock-summary-path", has_text="/model/metadata")
    )
    metadata.locator(".opblock-summary").click()
    metadata.get_by_role("button", name="Try it out").click()
    metadata.get_by_role("button", name="Execute").click()
    expect(metadata.locator(".responses-wrapper .live-responses-table")).to_contain_text(
        '"id": "captioner-demo"'
    )


def test_docs_lead_back_to_the_web_page(desktop: Browsing) -> None:
    page = desktop.open("/docs")
    back = page.get_by_role("link", name="caption images on the web page")
    expect(back).to_be_visible(timeout=30_000)
    back.click()
    expect(page.locator("#dropzone")).to_be_visible()
