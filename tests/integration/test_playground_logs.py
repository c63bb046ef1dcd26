"""The playground's Logs page in a real browser (the system's Chromium, driven by Playwright) against the
real server: a gateway's logs listed, filtered, paged, summed over the whole filter and opened, with the
same numbers as the logs API's own, no key on the page, and the controls in view at any height."""

from __future__ import annotations

import json

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.integration.browser import chromium, open_playground
from tests.support.ai_gateways import ACCOUNT, gateways_path, new_gateway
from tests.support.repo import ARTIFACTS

GATEWAYS = gateways_path()
METADATA = {"team": "blue"}
BUSY_LOGS = 30  # more than a page of 20, more rows than the table shows at once


def through(client: httpx.Client, server, gateway_id: str, body: dict, **headers: str) -> httpx.Response:
    return client.post(f"/v1/{ACCOUNT}/{gateway_id}/workers-ai/{server.model}", json=body, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def gateways(server):
    """Two fresh gateways. `logs`: a plain request, one with metadata that the cache keeps, the same
    again answered from the cache, and a refused one (top_k 0), in that order. `busy`: one request and
    then the same from the cache, BUSY_LOGS in all."""
    with server.client() as client:
        made = {"logs": new_gateway(client, "logs"), "busy": new_gateway(client, "busy")}
        short = {"max_tokens": 4, "seed": 1}
        assert through(client, server, made["logs"], {"prompt": "Say hi.", **short}).status_code == 200
        cached = {"prompt": "Name a colour.", **short}
        options = {"cf-aig-metadata": json.dumps(METADATA), "cf-aig-cache-ttl": "300"}
        assert through(client, server, made["logs"], cached, **options).headers["cf-aig-cache-status"] == "MISS"
        assert through(client, server, made["logs"], cached, **options).headers["cf-aig-cache-status"] == "HIT"
        assert through(client, server, made["logs"], {"prompt": "Hi", "top_k": 0, **short}).status_code == 400
        for _ in range(BUSY_LOGS):
            answer = through(client, server, made["busy"], cached, **{"cf-aig-cache-ttl": "300"})
            assert answer.status_code == 200
        yield made
        for gateway_id in made.values():
            client.delete(f"{GATEWAYS}/{gateway_id}")


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


def open_logs(browser, server, query: str = "", width: int = 1400, height: int = 1000) -> Page:
    """The Logs page in a fresh tab, which asks for the key once; returns once the table is shown."""
    page = browser.new_context(viewport={"width": width, "height": height}).new_page()
    page.goto(f"{server.base_url}/playground/logs?{query}")
    page.locator("#key-dialog").wait_for(state="visible")
    page.fill("#key", server.api_key)
    page.locator("#key-form button[type=submit]").click()
    wait_for_table(page)
    return page


@pytest.fixture
def logs_page(browser, server, gateways):
    page = open_logs(browser, server, f"gateway={gateways['logs']}")
    yield page
    page.context.close()


def wait_for_table(page: Page) -> None:
    expect(page.locator("#logs")).not_to_have_attribute("aria-busy", "true")
    expect(page.locator("#error")).to_be_hidden()


def rows(page: Page):
    return page.locator("#log-rows tr")


def column(page: Page, title: str) -> list[str]:
    titles = page.locator("#log-head th").all_inner_texts()
    index = titles.index(title) + 1
    return page.locator(f"#log-rows tr td:nth-child({index})").all_inner_texts()


def api_page(server, gateway_id: str, filters: list[dict], **params) -> dict:
    """The logs API's own answer for the same filters, with the sums over all of them."""
    query = {"meta_info": "true", **params, **({"filters": json.dumps(filters)} if filters else {})}
    with server.client() as client:
        answer = client.get(f"{GATEWAYS}/{gateway_id}/logs", params=query)
    assert answer.status_code == 200, answer.text
    return answer.json()


def shown_sums(page: Page) -> dict:
    number = lambda selector: int(page.locator(selector).inner_text().replace(",", ""))  # noqa: E731
    return {
        "total_count": number("#sum-count"),
        "total_tokens_in": number("#sum-tokens-in"),
        "total_tokens_out": number("#sum-tokens-out"),
        "total_tokens_cached": number("#sum-tokens-cached"),
        "total_cost": float(page.locator("#sum-cost").inner_text().lstrip("$")),
    }


def assert_sums_are_the_apis(page: Page, info: dict) -> None:
    shown = shown_sums(page)
    for name in ("total_count", "total_tokens_in", "total_tokens_out", "total_tokens_cached"):
        assert shown[name] == info[name], (name, shown, info)
    assert shown["total_cost"] == pytest.approx(info["total_cost"], rel=0.01), (shown, info)


def test_the_pages_link_to_each_other(server):
    assert 'href="/playground/logs"' in httpx.get(f"{server.base_url}/").text
    assert 'href="/playground/logs"' in httpx.get(f"{server.base_url}/playground").text
    logs = httpx.get(f"{server.base_url}/playground/logs")
    assert 'href="/playground"' in logs.text
    assert "script-src 'self'" in logs.headers["content-security-policy"]
    assert "http://" not in logs.text and "https://" not in logs.text


def test_the_picker_lists_the_gateways_and_the_table_their_logs(browser, server, gateways):
    page = open_logs(browser, server)
    assert {gateways["logs"], gateways["busy"]} <= set(page.locator("#gateway option").all_inner_texts())
    page.select_option("#gateway", gateways["logs"])
    wait_for_table(page)
    expect(rows(page)).to_have_count(4)
    # Newest first: the refused request was the last one sent.
    assert column(page, "Status") == ["400", "200", "200", "200"]
    assert column(page, "Cached") == ["miss", "hit", "miss", "miss"]
    assert column(page, "Metadata") == ["", "team=blue", "team=blue", ""]
    assert all(column(page, "Model"))
    api = api_page(server, gateways["logs"], [])
    assert [log["status_code"] for log in api["result"]] == [400, 200, 200, 200]
    assert column(page, "Tokens in") == [
        f"{log['tokens_in']:,}" if log["tokens_in"] is not None else "" for log in api["result"]
    ]
    assert_sums_are_the_apis(page, api["result_info"])
    assert api["result_info"]["total_tokens_in"] > 0
    page.screenshot(path=str(ARTIFACTS / "playground-logs.png"))
    page.context.close()


FILTERS = {
    "cache hit": (("#filter-cache", "hit"), [{"key": "cached", "operator": "eq", "value": True}], 1),
    "status error": (("#filter-status", "error"), [{"key": "success", "operator": "eq", "value": False}], 1),
    "metadata": (
        ("#filter-meta-key", "team", "#filter-meta-value", "blue"),
        [
            {"key": "metadata.key", "operator": "eq", "value": "team"},
            {"key": "metadata.value", "operator": "eq", "value": "blue"},
        ],
        2,
    ),
    "unknown model": (
        ("#filter-model", "@cf/no/such-model"),
        [{"key": "model", "operator": "eq", "value": "@cf/no/such-model"}],
        0,
    ),
}


@pytest.mark.parametrize("name", list(FILTERS))
def test_a_filter_narrows_the_rows_and_the_sums(logs_page, server, gateways, name):
    fields, filters, expected = FILTERS[name]
    everything = shown_sums(logs_page)
    for selector, value in zip(fields[::2], fields[1::2], strict=True):
        if logs_page.locator(selector).evaluate("e => e.tagName") == "SELECT":
            logs_page.select_option(selector, value)
        else:
            logs_page.fill(selector, value)
    logs_page.click("#apply")
    wait_for_table(logs_page)
    api = api_page(server, gateways["logs"], filters)
    assert api["result_info"]["total_count"] == expected
    expect(rows(logs_page)).to_have_count(max(expected, 1))  # an empty list shows one row that says so
    assert_sums_are_the_apis(logs_page, api["result_info"])
    assert shown_sums(logs_page) != everything
    shown = {
        "cache hit": ("Cached", "hit"),
        "status error": ("Status", "400"),
        "metadata": ("Metadata", "team=blue"),
    }.get(name)
    if shown:
        assert set(column(logs_page, shown[0])) == {shown[1]}
    else:
        expect(rows(logs_page)).to_have_text(["No logs match."])


def test_a_row_shows_its_request_and_answer_and_no_key(logs_page, server):
    logs_page.locator("#log-rows tr").nth(2).click()  # the request with metadata, answered by the model
    dialog = logs_page.locator("#detail-dialog")
    expect(dialog).to_be_visible()
    expect(logs_page.locator("#detail-request")).to_contain_text('"prompt": "Name a colour."')
    expect(logs_page.locator("#detail-response")).to_contain_text('"response"')
    assert "team=blue" in logs_page.locator("#detail-fields").inner_text()
    for text in (logs_page.content(), logs_page.locator("body").inner_text()):
        assert server.api_key not in text
    logs_page.click("#close-detail")
    expect(dialog).to_be_hidden()


def test_paging_keeps_the_sums_of_the_whole_filter(browser, server, gateways):
    page = open_logs(browser, server, f"gateway={gateways['busy']}&per_page=20")
    expect(rows(page)).to_have_count(20)
    assert page.locator("#page-numbers button").all_inner_texts() == ["1", "2"]
    first = shown_sums(page)
    assert first["total_count"] == BUSY_LOGS
    assert_sums_are_the_apis(page, api_page(server, gateways["busy"], [])["result_info"])
    page.click("#next")
    wait_for_table(page)
    expect(rows(page)).to_have_count(BUSY_LOGS - 20)
    expect(page.locator("#page-numbers [aria-current=page]")).to_have_text("2")
    assert page.locator("#next").is_disabled()
    assert shown_sums(page) == first
    page.locator("#page-numbers button", has_text="1").click()
    wait_for_table(page)
    expect(rows(page)).to_have_count(20)
    page.context.close()


def test_a_key_given_on_the_chat_page_serves_the_logs_page(browser, server, gateways):
    page = browser.new_context().new_page()
    open_playground(page, server.base_url, server.api_key)
    page.get_by_role("link", name="Logs").click()
    page.wait_for_url("**/playground/logs**")
    wait_for_table(page)
    assert not page.locator("#key-dialog").is_visible()
    assert page.locator("#gateway option").count() >= 2
    page.context.close()


def assert_in_view(page: Page, selector: str):
    box = page.locator(selector).bounding_box()
    width, height = page.evaluate("[window.innerWidth, window.innerHeight]")
    inside = box and box["x"] >= 0 and box["y"] >= 0
    inside = inside and box["x"] + box["width"] <= width and box["y"] + box["height"] <= height
    assert inside, f"{selector} at {box} is outside the {width}x{height} window"


CONTROLS = ("#gateway", "#filter-model", "#filter-status", "#filter-cache", "#filter-meta-key", "#filter-meta-value")


@pytest.mark.parametrize("width, height", [(1400, 1000), (1400, 700), (1024, 600)])
def test_the_controls_stay_in_view(browser, server, gateways, width, height):
    """With more rows than fit, the table scrolls in its own area: the filters, the sums, the table's
    header row and the pager stay where they are."""
    page = open_logs(browser, server, f"gateway={gateways['busy']}&per_page=50", width, height)
    expect(rows(page)).to_have_count(BUSY_LOGS)
    area = page.locator("#table-area")
    assert area.evaluate("e => e.scrollHeight > e.clientHeight"), "the table fits: nothing to scroll"
    area.evaluate("e => { e.scrollTop = e.scrollHeight; }")
    for selector in (
        *CONTROLS,
        "#apply",
        "#sum-cost",
        "#log-head th >> nth=0",
        "#log-rows tr >> nth=-1 >> td >> nth=0",
        "#next",
    ):
        assert_in_view(page, selector)
    assert page.evaluate("document.documentElement.scrollHeight <= window.innerHeight")
    page.context.close()
