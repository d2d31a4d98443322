"""The web page at ``/``, in Chromium, against the real server with the demo model.

Every expected caption comes from the API itself (``POST /model/predict`` with the same
bytes), so the page is checked against the server, not against text written here.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Locator, Page, Route, expect

from web.browsing import MAX_UPLOAD_BYTES, Browsing, browse, serve
from web.scenes import SCENES, scene_png

pytestmark = pytest.mark.slow

RED, GREEN, YELLOW = SCENES  # circle left of square; a triangle; star above circle
CAPTION_TIMEOUT_MS = 30_000


def api_predictions(base: str, name: str, **params: int) -> list[dict[str, Any]]:
    """What the API answers for one of the scenes."""
    files = {"image": (name, scene_png(name), "image/png")}
    response = httpx.post(f"{base}/model/predict", params=params, files=files, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]  # type: ignore[no-any-return]


def sentence(caption: str) -> str:
    """How the page writes a caption: capitalised, no space before the full stop."""
    text = re.sub(r"\s+([.,!?;:])", r"\1", caption.strip())
    return text[:1].upper() + text[1:]


def png_file(name: str) -> dict[str, Any]:
    return {"name": name, "mimeType": "image/png", "buffer": scene_png(name)}


def truncated_jpeg() -> bytes:
    """A photo-like JPEG cut in half: its header is whole, its pixels stop midway."""
    noise = np.random.default_rng(3).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    return data[: len(data) // 2]


def card(page: Page, name: str) -> Locator:
    """The gallery card of one file, by the heading that names it."""
    return page.locator(".card").filter(has=page.get_by_role("heading", name=name, exact=True))


def wait_until_ready(page: Page) -> None:
    """The page names the model the server describes, and knows the server's limits."""
    base = page.url.split("/", 3)[:3]
    metadata = httpx.get("/".join([*base, "model", "metadata"])).json()
    expect(page.locator("#model-text")).to_have_text(f"Model: {metadata['name']}")
    expect(page.locator("#limits")).to_contain_text("per image")  # the size check needs it


def test_two_images_show_their_captions_as_text_and_alt_text(desktop: Browsing) -> None:
    page = desktop.open()
    wait_until_ready(page)
    metadata = httpx.get(f"{desktop.base}/model/metadata").json()
    expect(page.locator("#notice")).to_have_text(metadata["description"])
    expect(page.locator("#notice")).to_contain_text("start the server without --model demo")

    page.set_input_files("#file-input", [png_file(RED), png_file(GREEN)])

    for name in (RED, GREEN):
        expected = sentence(api_predictions(desktop.base, name)[0]["caption"])
        expect(card(page, name).locator(".caption")).to_have_text(
            expected, timeout=CAPTION_TIMEOUT_MS
        )
        expect(card(page, name).get_by_role("img")).to_have_attribute("alt", expected)
    expect(page.locator("#summary")).to_have_text("2 of 2 captioned")

    card(page, RED).get_by_role("button", name=f"Copy caption of {RED}").click()
    expect(page.locator("#announcer")).to_contain_text("Copied")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == sentence(api_predictions(desktop.base, RED)[0]["caption"])


def test_bad_files_get_their_own_message_while_the_good_image_is_captioned(
    desktop: Browsing,
) -> None:
    desktop.allow_console_error("status of 400")  # the corrupt PNG's answer
    page = desktop.open()
    wait_until_ready(page)
    uploads: list[str] = []
    page.on(
        "request",
        lambda request: uploads.append(request.url) if request.method == "POST" else None,
    )
    page.set_input_files(
        "#file-input",
        [
            png_file(GREEN),
            {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a picture"},
            {"name": "huge.png", "mimeType": "image/png", "buffer": b"\0" * MAX_UPLOAD_BYTES},
            {"name": "broken.png", "mimeType": "image/png", "buffer": b"\x89PNG\r\n\x1a\n1234"},
            {"name": "truncated.jpg", "mimeType": "image/jpeg", "buffer": truncated_jpeg()},
        ],
    )

    expected = sentence(api_predictions(desktop.base, GREEN)[0]["caption"])
    expect(card(page, GREEN).locator(".caption")).to_have_text(expected, timeout=CAPTION_TIMEOUT_MS)
    messages = {
        "notes.txt": "Not an image: this is a text/plain file. Choose a photo or picture file.",
        "huge.png": "Too large: 293 KiB, and this server accepts images up to 292 KiB.",
        "broken.png": "The server cannot caption this file: the PNG image is corrupt or truncated",
        "truncated.jpg": "The server cannot caption this file: the JPEG image is corrupt or "
        "truncated and cannot be decoded.",
    }
    for name, message in messages.items():
        expect(card(page, name)).to_have_attribute("data-state", "error")
        expect(card(page, name).locator(".state-text")).to_contain_text(message)
        # Every file without a caption shows the broken-file icon, not a blank or a partial
        # picture (a browser draws the first half of a truncated JPEG).
        expect(card(page, name)).to_have_class(re.compile(r"\bno-image\b"))
    expect(page.locator("#summary")).to_have_text("1 of 5 captioned · 4 failed")
    desktop.screenshot("bad-files")
    # The text file and the oversized one were refused before any upload.
    assert len(uploads) == 3, uploads
    assert len(desktop.console_errors) == 2


def test_detail_view_lists_every_caption_with_its_probability_and_captions_again(
    desktop: Browsing,
) -> None:
    page = desktop.open()
    wait_until_ready(page)
    page.set_input_files("#file-input", [png_file(RED)])
    expect(card(page, RED)).to_have_attribute("data-state", "done", timeout=CAPTION_TIMEOUT_MS)

    opener = card(page, RED).get_by_role("button", name=f"All captions of {RED}")
    opener.focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name=RED)
    expect(dialog).to_be_visible()
    rows = dialog.locator(".caption-row")

    def expect_rows(predictions: list[dict[str, Any]]) -> None:
        expect(rows.locator(".caption-text")).to_have_text(
            [sentence(p["caption"]) for p in predictions], timeout=CAPTION_TIMEOUT_MS
        )
        for row, prediction in zip(rows.all(), predictions, strict=True):
            shown = row.locator(".probability").text_content() or ""
            percent = float(re.fullmatch(r"Probability ([\d.]+) %", shown).group(1))  # type: ignore[union-attr]
            assert percent == pytest.approx(prediction["probability"] * 100, rel=0.01, abs=0.05)
            bar = row.locator(".bar").bounding_box()
            fill = row.locator(".bar span").bounding_box()
            assert bar and fill
            assert fill["width"] / bar["width"] == pytest.approx(
                prediction["probability"], abs=0.01 + 2 / bar["width"]
            )

    expect_rows(api_predictions(desktop.base, RED))
    expect(dialog.locator("#detail-state")).to_have_text(
        "3 captions from beam size 3, max length 20."
    )

    dialog.get_by_label("Beam size").fill("6")
    dialog.get_by_role("button", name="Caption again").click()
    wider = api_predictions(desktop.base, RED, beam_size=6)
    assert len(wider) > 3
    expect_rows(wider)
    expect(dialog.locator("#detail-state")).to_have_text(
        f"{len(wider)} captions from beam size 6, max length 20."
    )
    desktop.screenshot("desktop-detail", full_page=False)

    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(opener).to_be_focused()


def test_images_from_picker_drop_and_paste_and_the_word_filter(desktop: Browsing) -> None:
    page = desktop.open()
    wait_until_ready(page)
    page.set_input_files("#file-input", [png_file(RED)])
    transfer = page.evaluate_handle(
        """([name, bytes]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], name, {type: "image/png"}));
            return transfer;
        }""",
        [GREEN, list(scene_png(GREEN))],
    )
    page.locator("#dropzone").dispatch_event("drop", {"dataTransfer": transfer})
    page.evaluate(
        """(bytes) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], "image.png", {type: "image/png"}));
            document.dispatchEvent(new ClipboardEvent("paste", {clipboardData: transfer}));
        }""",
        list(scene_png(YELLOW)),
    )
    pasted = "pasted-image-1.png"
    expect(page.locator('.card[data-state="done"]')).to_have_count(3, timeout=CAPTION_TIMEOUT_MS)
    expect(card(page, pasted).locator(".caption")).to_have_text(
        sentence(api_predictions(desktop.base, YELLOW)[0]["caption"])
    )

    words = page.locator("#word-list .word span:first-child")
    listed = words.all_text_contents()
    assert listed[0] == "large"  # in all three captions
    assert {"red", "circle", "triangle", "star", "left", "above"} <= set(listed)
    assert not {"a", "of", "the", "to", "."} & set(listed), listed
    desktop.screenshot("desktop")

    shown = page.locator(".card:not([hidden]) .name")
    red = page.get_by_role("button", name="red, in 1 caption")
    red.focus()
    page.keyboard.press("Enter")
    expect(shown).to_have_text([RED])
    expect(page.locator("#filter-status")).to_contain_text("Showing 1 of 3 images")
    expect(red).to_be_focused()
    # A new caption changes the counts: the list is rebuilt, the focus stays on "red".
    page.set_input_files("#file-input", [{**png_file(RED), "name": "again.png"}])
    expect(page.get_by_role("button", name="red, in 2 captions")).to_be_focused(
        timeout=CAPTION_TIMEOUT_MS
    )
    expect(shown).to_have_text([RED, "again.png"])
    circle = page.get_by_role("button", name="circle, in 3 captions")
    circle.click()
    expect(circle).to_have_attribute("aria-pressed", "true")
    expect(shown).to_have_text([RED, pasted, "again.png"])
    circle.click()
    expect(shown).to_have_text([RED, GREEN, pasted, "again.png"])


def test_downloads_hold_the_same_captions_as_the_api(desktop: Browsing) -> None:
    page = desktop.open()
    wait_until_ready(page)
    page.set_input_files("#file-input", [png_file(name) for name in SCENES])
    expect(page.locator('.card[data-state="done"]')).to_have_count(3, timeout=CAPTION_TIMEOUT_MS)
    expected = {
        name: [
            {key: p[key] for key in ("caption", "probability", "logprob")}
            for p in api_predictions(desktop.base, name)
        ]
        for name in SCENES
    }

    with page.expect_download() as json_download:
        page.get_by_role("button", name="Download JSON").click()
    document = json.loads(Path(json_download.value.path()).read_text())
    assert json_download.value.suggested_filename == "captions.json"
    assert document["model"]["id"] == "captioner-demo"
    assert {entry["image"]: entry["captions"] for entry in document["images"]} == expected

    with page.expect_download() as csv_download:
        page.get_by_role("button", name="Download CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(csv_download.value.path()).read_text())))
    from_csv: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        assert int(row["rank"]) == len(from_csv.get(row["image"], [])) + 1
        from_csv.setdefault(row["image"], []).append(
            {
                "caption": row["caption"],
                "probability": float(row["probability"]),
                "logprob": float(row["logprob"]),
            }
        )
    assert from_csv == expected


def test_loading_and_busy_answers_are_explained_waited_out_and_end_in_a_caption(
    desktop: Browsing,
) -> None:
    desktop.allow_console_error("status of 503")
    page = desktop.page
    busy = [
        ("the model is still loading", "1"),
        ("the request queue is full (64 of 64 waiting)", "1"),
    ]
    sent: list[float] = []

    def busy_twice(route: Route) -> None:
        sent.append(time.monotonic())
        if busy:
            message, retry_after = busy.pop(0)
            route.fulfill(
                status=503,
                headers={"Retry-After": retry_after},
                content_type="application/json",
                body=json.dumps({"status": "error", "message": message}),
            )
        else:
            route.continue_()

    def loading_once(route: Route) -> None:
        route.fulfill(
            status=503,
            content_type="application/json",
            body=json.dumps(
                {"ready": False, "status": "error", "message": "the model is still loading"}
            ),
        )

    page.route("**/model/predict?*", busy_twice)
    page.route("**/v2/health/ready", loading_once, times=1)
    desktop.open()
    expect(page.locator("#notice")).to_have_text(
        "The model is not ready yet (the model is still loading). Images you add now wait, "
        "and are captioned as soon as it is."
    )
    expect(page.locator("#model-text")).to_have_text("Model not ready: the model is still loading")
    wait_until_ready(page)  # the page asked again, and the model was ready
    page.set_input_files("#file-input", [png_file(GREEN)])

    state = card(page, GREEN).locator(".state-text")
    expect(state).to_have_text("Queued: the model is still loading. Trying again in 1 s.")
    expect(card(page, GREEN)).to_have_attribute("data-state", "queued")
    expect(state).to_have_text(
        "Queued: the request queue is full (64 of 64 waiting). Trying again in 1 s."
    )
    expect(card(page, GREEN).locator(".caption")).to_have_text(
        sentence(api_predictions(desktop.base, GREEN)[0]["caption"]),
        timeout=CAPTION_TIMEOUT_MS,
    )
    assert len(sent) == 3
    assert sent[1] - sent[0] >= 0.9 and sent[2] - sent[1] >= 0.9  # Retry-After was respected
    assert len(desktop.console_errors) == 3  # the three 503s


@pytest.fixture(scope="module")
def tiny_queue_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server that admits one request at a time: a second one at once gets 503."""
    yield from serve(tmp_path_factory, "--max-queue-size", "1", "--max-batch-size", "4")


@pytest.fixture
def on_tiny_queue(browser: Browser, tiny_queue_server: str) -> Iterator[Browsing]:
    yield from browse(browser, tiny_queue_server, viewport={"width": 1280, "height": 900})


def test_a_full_queue_on_a_real_server_is_retried_until_every_image_has_its_caption(
    on_tiny_queue: Browsing,
) -> None:
    on_tiny_queue.allow_console_error("status of 503")
    page = on_tiny_queue.open()
    wait_until_ready(page)
    # Four at once (the page keeps max_batch_size requests in flight), one admitted.
    files = [png_file(name) for name in SCENES]
    files.append({**png_file(RED), "name": "copy.png"})
    page.set_input_files("#file-input", files)
    expect(page.locator('.card[data-state="done"]')).to_have_count(4, timeout=CAPTION_TIMEOUT_MS)
    for name in SCENES:
        expected = sentence(api_predictions(on_tiny_queue.base, name)[0]["caption"])
        expect(card(page, name).locator(".caption")).to_have_text(expected)
    metrics = httpx.get(f"{on_tiny_queue.base}/metrics").text
    refused = re.search(r'^captioner_rejections_total\{reason="queue_full"\} (\S+)$', metrics, re.M)
    assert refused and float(refused.group(1)) >= 1, "no request was refused as queue_full"
    assert on_tiny_queue.console_errors  # the 503s the page waited out


def test_phone_width_keyboard_order_and_screen_reader_names(phone: Browsing) -> None:
    page = phone.open()
    wait_until_ready(page)
    page.set_input_files("#file-input", [png_file(RED), png_file(GREEN)])
    expect(page.locator('.card[data-state="done"]')).to_have_count(2, timeout=CAPTION_TIMEOUT_MS)

    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scroll
    first, second = (box for box in (card(page, n).bounding_box() for n in (RED, GREEN)) if box)
    assert first["x"] == second["x"] and second["y"] > first["y"]  # one column
    phone.screenshot("phone")

    caption = sentence(api_predictions(phone.base, RED)[0]["caption"])
    expect(card(page, RED)).to_match_aria_snapshot(
        f"""
        - listitem:
          - img "{caption}"
          - heading "{RED}" [level=3]
          - paragraph: "{caption}"
          - paragraph: /Probability \\d/
          - button "Copy caption of {RED}"
          - button "All captions of {RED}"
          - button "Remove {RED}"
        """
    )

    order = []
    for _ in range(4):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.textContent.trim()"))
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline == "solid", f"no visible focus on {order[-1]!r}"
    assert order == ["Skip to the image picker", "captioner", "API docs", "Choose images…"]

    card(page, RED).get_by_role("button", name=f"All captions of {RED}").click()
    expect(page.get_by_role("dialog", name=RED).locator(".caption-row")).to_have_count(3)
    phone.screenshot("phone-detail", full_page=False)
