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
    # Opening the operation shows its parameters, read from /openapi.json.
    predict.first.locator(".opblock-summary").click()
    expect(predict.first.locator("table.parameters")).to_contain_text("beam_size")
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
