"""The async batch API (`queueRequest`) on the real engine over HTTP, on the session server."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.integration.session import BATCH_MAX_ITEMS, BATCH_MAX_PAYLOAD_BYTES
from tests.support.envelopes import result, workers_ai_error
from tests.support.metrics import scrape
from tests.support.repo import REAL_MODEL, STAND_IN
from tests.support.waiting import wait_for

QUEUE = {"queueRequest": "true"}
QUESTION = [{"role": "user", "content": "Name one fruit."}]
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


def submit(client: httpx.Client, server, requests: list[Any]) -> httpx.Response:
    return client.post(server.run_url(), params=QUEUE, json={"requests": requests})


def polled(client: httpx.Client, server, request_id: str, timeout: float = 600) -> tuple[dict[str, Any], int]:
    """The finished job's answer, and how many polls it took."""
    deadline, polls = time.monotonic() + timeout, 0
    while True:
        answer = result(client.post(server.run_url(), json={"request_id": request_id}))
        polls += 1
        if answer["status"] == "done":
            return answer, polls
        assert answer["status"] in ("queued", "running"), answer
        assert time.monotonic() < deadline, f"the batch was not done in {timeout} s"
        time.sleep(0.5)


def until_done(client: httpx.Client, server, request_id: str) -> dict[str, Any]:
    return polled(client, server, request_id)[0]


def test_a_batch_is_queued_at_once_and_answers_each_request_in_order(client, server):
    interactive = result(client.post(server.run_url(), json={"messages": QUESTION, "max_tokens": 8}))
    requests = [
        {"prompt": "Say hello.", "max_tokens": 6, "external_reference": "hello"},
        {"messages": QUESTION, "max_tokens": 8, "temperature": 0, "external_reference": "fruit"},
        {
            "messages": [{"role": "user", "content": "Invent a person; answer in JSON."}],
            "response_format": {"type": "json_schema", "json_schema": PERSON},
            "max_tokens": 100,
            "seed": 2,
        },
    ]
    queued = result(submit(client, server, requests))
    assert queued["status"] == "queued" and queued["model"] == STAND_IN
    done = until_done(client, server, queued["request_id"])
    assert done["request_id"] == queued["request_id"]
    responses = done["responses"]
    assert [(r["id"], r["external_reference"], r["success"]) for r in responses] == [
        (0, "hello", True),
        (1, "fruit", True),
        (2, None, True),
    ]
    hello, fruit, json_object = (response["result"] for response in responses)
    assert isinstance(hello["response"], str) and 1 <= hello["usage"]["completion_tokens"] <= 6
    # The same pipeline as the run endpoint: the same chat template, so the same prompt tokens.
    assert fruit["usage"]["prompt_tokens"] == interactive["usage"]["prompt_tokens"]
    assert 1 <= fruit["usage"]["completion_tokens"] <= 8
    assert set(json_object["response"]) >= {"name", "age"}  # JSON mode, parsed as on the run endpoint
    totals = [sum(r["result"]["usage"][kind] for r in responses) for kind in ("prompt_tokens", "completion_tokens")]
    cached = sum(r["result"]["usage"]["prompt_tokens_details"]["cached_tokens"] for r in responses)
    assert done["usage"] == {
        "prompt_tokens": totals[0],
        "completion_tokens": totals[1],
        "total_tokens": sum(totals),
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def test_a_request_that_fails_running_fails_alone_and_an_invalid_one_refuses_the_batch(client, server):
    too_long = {"prompt": "Hi", "max_tokens": 7968, "external_reference": "long"}  # over the window with its prompt
    queued = result(submit(client, server, [too_long, {"prompt": "Hi", "max_tokens": 4}]))
    long, short = until_done(client, server, queued["request_id"])["responses"]
    assert long["success"] is False and long["external_reference"] == "long" and long["result"] == {}
    [long_error] = long["errors"]
    assert long_error["code"] == 5021 and "context window" in long_error["message"]
    assert short["success"] is True
    message = workers_ai_error(submit(client, server, [{"prompt": "Hi"}, {"messages": "not a list"}]), 400, 5006)
    assert "(in requests[1])" in message


def test_the_bounds_and_an_unknown_request_id(client, server):
    message = workers_ai_error(submit(client, server, [{"prompt": "Hi"}] * (BATCH_MAX_ITEMS + 1)), 400, 5006)
    assert f"at most {BATCH_MAX_ITEMS} requests" in message
    big = submit(client, server, [{"prompt": "x" * BATCH_MAX_PAYLOAD_BYTES}])
    assert f"at most {BATCH_MAX_PAYLOAD_BYTES} bytes" in workers_ai_error(big, 413, 3006)
    unknown = client.post(server.run_url(), json={"request_id": "00000000-0000-0000-0000-000000000000"})
    workers_ai_error(unknown, 404, 3045)


def test_batch_items_are_counted_and_logged_as_requests_of_protocol_batch(client, server):
    before = scrape(server)
    queued = result(submit(client, server, [{"prompt": "Hi", "max_tokens": 4}, {"prompt": "Yo", "max_tokens": 4}]))
    done, polls = polled(client, server, queued["request_id"])
    # The submission and the polls are the API requests; each item is a request of protocol batch.
    wait_for(
        lambda: (
            (scrape(server) - before).value("wai_requests_total", model=REAL_MODEL, protocol="workers_ai") == 1 + polls
        ),
        "each API request counted",
    )
    after = scrape(server) - before
    assert after.value("wai_requests_total", model=REAL_MODEL, protocol="batch", status="200", code="none") == 2
    assert after.value("wai_requests_total", model=REAL_MODEL) == 1 + polls + 2
    assert after.value("wai_batch_items_total", model=REAL_MODEL, outcome="success") == 2
    assert after.value("wai_batch_items_total", model=REAL_MODEL, outcome="error") == 0
    tokens = sum(response["result"]["usage"]["completion_tokens"] for response in done["responses"])
    assert after.value("wai_generation_tokens_total", model=REAL_MODEL) == tokens
    lines = [line for line in server.request_log() if line.get("batch") == queued["request_id"]]
    assert sorted((line["item"], line["attempt"], line["outcome"], line["protocol"]) for line in lines) == [
        (0, 1, "success", "batch"),
        (1, 1, "success", "batch"),
    ]
    assert scrape(server).value("wai_batch_jobs", status="done") >= 1
