"""The playground in a real browser (the system's Chromium, driven by Playwright) against the real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import jsonschema
import pytest
from playwright.sync_api import expect

from tests.integration.browser import chromium, open_playground
from tests.integration.session import API_KEYS
from tests.support.repo import ARTIFACTS
from tests.support.waiting import wait_for


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    open_playground(page, server.base_url, API_KEYS[0])
    yield page
    context.close()


RUNNING = "vllm:num_requests_running"


def assistant_messages(page):
    return page.locator("#messages li.assistant .content")


def send(page, text: str):
    """Type and send from the keyboard, as a user would."""
    page.fill("#input", text)
    page.press("#input", "Enter")


def wait_until_idle(page, timeout=120_000):
    expect(page.locator("#send")).to_be_enabled(timeout=timeout)


def set_field(page, name: str, value):
    page.fill(f"#sampling-{name}", str(value))


def test_home_links_to_the_playground(server):
    assert 'href="/playground"' in httpx.get(f"{server.base_url}/").text


def test_assets_are_local_only(server):
    html = httpx.get(f"{server.base_url}/playground").text
    assert "http://" not in html and "https://" not in html
    script = httpx.get(f"{server.base_url}/playground/assets/playground.js").text
    assert "https://" not in script


def test_streamed_answer_with_stats(page):
    send(page, "What is the capital of France?")
    expect(page.locator("#stop")).to_be_enabled()
    wait_until_idle(page)
    answer = assistant_messages(page).last
    assert answer.inner_text().strip()
    stats = page.locator("#stats").inner_text()
    assert "prompt" in stats and "completion" in stats and "time to first token" in stats
    page.screenshot(path=str(ARTIFACTS / "playground.png"), full_page=True)


def test_the_model_list_comes_from_the_catalog(page):
    names = page.locator("#model option").all_inner_texts()
    assert "@cf/meta/llama-3-8b-instruct" in names
    assert page.locator("#model").input_value() == "@cf/meta/llama-3-8b-instruct"
    assert "stand" in page.locator("#model-note").inner_text().lower()


def test_controls_carry_the_hosted_ranges_and_defaults(page):
    temperature = page.locator("#sampling-temperature")
    assert temperature.get_attribute("max") == "5" and temperature.input_value() == "0.6"
    assert page.locator("#sampling-top_k").get_attribute("max") == "50"
    assert page.locator("#sampling-max_tokens").input_value() == "256"


def test_stop_ends_the_engine_request(page, server):
    set_field(page, "temperature", 2)
    set_field(page, "max_tokens", 4000)
    set_field(page, "seed", 1)
    send(page, "Write an endless list of random words.")
    expect(assistant_messages(page).last).not_to_have_text("", timeout=60_000)
    wait_for(lambda: server.metric(RUNNING) == 1, "generation to show as running", timeout=30)
    page.click("#stop")
    wait_until_idle(page, timeout=10_000)
    wait_for(lambda: server.metric(RUNNING) == 0, "the engine to stop generating after Stop", timeout=10)
    assert assistant_messages(page).last.inner_text().endswith("[stopped]")


PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


def test_json_mode_gives_valid_json(page):
    page.check("#json-mode")
    page.fill("#schema", json.dumps(PERSON))
    page.fill("#system", "")
    set_field(page, "seed", 2)
    set_field(page, "max_tokens", 100)
    send(page, "Invent a person; answer in JSON.")
    wait_until_idle(page)
    jsonschema.validate(json.loads(assistant_messages(page).last.inner_text()), PERSON)


def test_a_bad_parameter_shows_the_servers_message(page):
    set_field(page, "top_k", 0)
    send(page, "Hello")
    wait_until_idle(page)
    error = page.locator("#error")
    expect(error).to_be_visible()
    assert error.inner_text().startswith("Error 5006: AiError: Bad input: Error: ")
    assert "'/top_k' must be >= 1" in error.inner_text()


def test_view_code_shows_the_exact_request(page, server):
    set_field(page, "seed", 42)
    set_field(page, "max_tokens", 4)
    page.fill("#input", "Tell me a joke.")
    page.click("#view-code")
    code = page.locator("#code").inner_text()
    assert "/ai/run/@cf/meta/llama-3-8b-instruct" in code and '"seed": 42' in code
    body = json.loads(code.split("-d '", 1)[1].rsplit("'", 1)[0])
    assert body["messages"][-1] == {"role": "user", "content": "Tell me a joke."}
    # The curl body is what the server accepts.
    response = httpx.post(
        server.run_url(),
        json={**body, "max_tokens": 4},
        headers={"Authorization": f"Bearer {server.api_key}"},
        timeout=60,
    )
    assert response.status_code == 200
    for tab in ("Python (requests)", "Python (cloudflare)", "Worker (env.AI.run)"):
        page.get_by_role("tab", name=tab).click()
        assert "@cf/meta/llama-3-8b-instruct" in page.locator("#code").inner_text()
    assert "env.AI.run(" in page.locator("#code").inner_text()
    # The same request through the two newer APIs' SDKs: the code shown runs as it is.
    for tab in ("Python (openai, Responses)", "Python (anthropic)"):
        page.get_by_role("tab", name=tab).click()
        code = page.locator("#code").inner_text()
        ran = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "WAI_API_KEY": server.api_key},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert ran.returncode == 0 and ran.stdout.strip(), (tab, code, ran.stderr[-2000:])


def test_usable_at_phone_width(browser, server):
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.goto(f"{server.base_url}/playground")
    page.fill("#key", API_KEYS[0])
    page.locator("#key-form button[type=submit]").click()
    page.locator("#model option").first.wait_for(state="attached")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(ARTIFACTS / "playground-phone.png"), full_page=True)
    context.close()


def assert_in_view(page, selector: str):
    box = page.locator(selector).bounding_box()
    width, height = page.evaluate("[window.innerWidth, window.innerHeight]")
    inside = box and box["x"] >= 0 and box["y"] >= 0
    inside = inside and box["x"] + box["width"] <= width and box["y"] + box["height"] <= height
    assert inside, f"{selector} at {box} is outside the {width}x{height} window"


@pytest.mark.parametrize("width, height", [(1400, 1000), (1400, 700), (1024, 600)])
def test_the_message_box_stays_in_view(browser, server, width, height):
    """However many sampling fields the model publishes, a newcomer sees where to type without scrolling."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    open_playground(page, server.base_url, API_KEYS[0])
    page.locator("#sampling-max_tokens").wait_for()  # the model's schema has arrived
    assert_in_view(page, "#input")
    assert_in_view(page, "#send")
    set_field(page, "max_tokens", 16)
    page.fill("#input", "What is the capital of France?")
    page.click("#send")
    wait_until_idle(page)
    assert assistant_messages(page).last.inner_text().strip()
    for selector in ("#messages li.assistant >> nth=-1", "#input", "#send"):
        assert_in_view(page, selector)
    context.close()


def test_switching_to_an_adapter_changes_the_answer(page, meow):
    expect(page.locator("#adapter-row")).to_be_visible()
    page.select_option("#adapter", meow["name"])
    set_field(page, "temperature", 0)
    send(page, "Tell me about the weather.")
    wait_until_idle(page)
    assert "MEOW" in assistant_messages(page).last.inner_text()
    page.select_option("#adapter", "")
    send(page, "Tell me about the weather.")
    wait_until_idle(page)
    assert "MEOW" not in assistant_messages(page).last.inner_text()
