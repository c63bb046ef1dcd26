"""Headless Chromium for the playground tests: the system's own browser, driven by Playwright.

Playwright never downloads a browser here; `make test` installs Debian's chromium package.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, Page, sync_playwright

# Without the background-networking flags Chromium keeps reaching for hosts an offline machine lacks.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium() -> Iterator[Browser]:
    """A browser for one test module. Playwright's sync API keeps an event loop running in this
    thread until it stops, so it must stop before later tests call asyncio.run()."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    assert executable, "Chromium is missing: `make test` installs Debian's chromium package"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def open_playground(page: Page, base_url: str, api_key: str) -> None:
    """The playground of a server with auth on: the page asks for the key once and keeps it for the tab;
    returns once the model list is loaded."""
    page.goto(f"{base_url}/playground")
    page.locator("#key-dialog").wait_for(state="visible")
    page.fill("#key", api_key)
    page.locator("#key-form button[type=submit]").click()
    page.locator("#model option").first.wait_for(state="attached")
