"""Browser test plumbing: the server as a process, Chromium pages that may not leave it.

The server is the real one, started as a user would (``python -m captioner serve --model
demo``) on a free 127.0.0.1 port. Every request the browser makes elsewhere is refused
and fails the test, so a page that needs the network cannot pass; so does any error in
the console that the test did not expect.

Chromium comes from Debian (``.ci/run`` installs it): Playwright's own browser download
needs a network this project does not have. Without ``/usr/bin/chromium`` the browser
tests are skipped on a developer's machine, and fail in CI (``CI`` set).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Route

from support.api_helpers import free_port, wait_until_ready

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # containers often have a small /dev/shm
]
# The server's upload limit in these tests: small, so a "too large" file is small too.
MAX_UPLOAD_BYTES = 300_000
# Screenshots for people to look at (git ignores the folder).
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "web"


def chromium() -> Path:
    """Debian's Chromium, or a skip (a failure in CI) without it."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium package")
    pytest.skip(f"browser tests need Debian's chromium ({CHROMIUM}); CI installs it")


def serve(tmp_path_factory: pytest.TempPathFactory, *options: str) -> Iterator[str]:
    """Run ``captioner serve --model demo`` on 127.0.0.1 until closed; yields its base URL."""
    chromium()  # no server to start when the browser tests cannot run
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPTIONER_")}
    log_path = tmp_path_factory.mktemp("server") / "serve.log"
    command = [
        sys.executable, "-m", "captioner", "serve", "--model", "demo", "--offline",
        "--host", "127.0.0.1", "--port", str(port),
        "--model-dir", str(log_path.parent / "unused"),
        "--max-upload-bytes", str(MAX_UPLOAD_BYTES),
        *options,
    ]  # fmt: skip
    with log_path.open("w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(process, base, 180, log_path.read_text)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@dataclass
class Browsing:
    """A page on the test server, and what it did that a test may check."""

    page: Page
    base: str
    outside_requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    allowed_console_errors: list[str] = field(default_factory=list)

    def allow_console_error(self, fragment: str) -> None:
        """Expect console errors containing ``fragment`` (Chromium logs every 4xx/5xx)."""
        self.allowed_console_errors.append(fragment)

    def open(self, path: str = "/") -> Page:
        self.page.goto(self.base + path)
        return self.page

    def screenshot(self, name: str, *, full_page: bool = True) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path


def browse(browser: Browser, base: str, **context_options: object) -> Iterator[Browsing]:
    """A fresh browser context whose requests outside ``base`` are refused and recorded."""
    context = browser.new_context(accept_downloads=True, **context_options)  # type: ignore[arg-type]
    page = context.new_page()
    browsing = Browsing(page=page, base=base)

    def guard(route: Route) -> None:
        if route.request.url.startswith(base + "/"):
            route.continue_()
        else:
            browsing.outside_requests.append(route.request.url)
            route.abort()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            browsing.console_errors.append(message.text)

    context.route("**/*", guard)
    page.on("console", on_console)
    page.on("pageerror", lambda error: browsing.console_errors.append(f"uncaught: {error}"))
    try:
        yield browsing
        unexpected = [
            text
            for text in browsing.console_errors
            if not any(fragment in text for fragment in browsing.allowed_console_errors)
        ]
        assert browsing.outside_requests == [], "the page asked for something outside the server"
        assert unexpected == [], "console errors"
    finally:
        context.close()
