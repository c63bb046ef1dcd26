"""Headless Chromium (the system's own browser, never a downloaded one) driven by Playwright."""

import shutil

import pytest
from playwright.sync_api import sync_playwright

from tests.integration.conftest import API_KEYS, server  # noqa: F401  (the session's real server)

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def browser():
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    assert executable, "Chromium is missing: `make test` installs Debian's chromium package"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):  # noqa: F811
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.dismiss())
    page.goto(f"{server.base_url}/playground")
    # Auth is on in the test server: the page asks for the key once and keeps it for the tab.
    page.locator("#key-dialog").wait_for(state="visible")
    page.fill("#key", API_KEYS[0])
    page.locator("#key-form button[type=submit]").click()
    page.locator("#model option").first.wait_for(state="attached")
    yield page
    context.close()
