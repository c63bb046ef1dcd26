"""Requests through an AI Gateway on the fake engines: its URLs, cache, retries, timeout, fallbacks,
rate limit, authorization and logs. The same behaviour on the real engine: tests/integration/test_gateway.py."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from server.engine.types import EngineRejected, EngineUnavailable
from tests.support.ai_gateways import gateways_path, new_gateway
from tests.support.fakes import TEXT_MODEL
from tests.support.metrics import scrape
from tests.support.sse import events

ACCOUNT = "acct"
GATEWAYS = gateways_path(ACCOUNT)
PADDING = re.compile(rb',"p":"[^"]*"')


def native(gateway: str, model: str = TEXT_MODEL) -> str:
    return f"/v1/{ACCOUNT}/{gateway}/workers-ai/{model}"


def prompt(text: str | None = None, **fields) -> dict:
    return {"prompt": text or f"tell me about {uuid.uuid4().hex}", "max_tokens": 4, **fields}


@pytest.fixture
def gateway(client):
    """Makes a fresh gateway of its own for the test (tests/support/ai_gateways.py), deleted after it."""
    made: list[str] = []

    def make(**settings) -> str:
        made.append(new_gateway(client, account=ACCOUNT, **settings))
        return made[-1]

    yield make
    for gateway_id in made:
        client.delete(f"{GATEWAYS}/{gateway_id}")


def logs_of(client, gateway_id: str) -> list[dict]:
    answer = client.get(f"{GATEWAYS}/{gateway_id}/logs", params={"per_page": 50})
    assert answer.status_code == 200, answer.text
    return answer.json()["result"]


# --- the cache --------------------------------------------------------------------------------


def test_a_repeated_whole_answer_is_a_hit_without_engine_work(client, engine, gateway):
    gw = gateway()
    body = prompt()
    first = client.post(native(gw), json=body, headers={"cf-aig-cache-ttl": "300"})
    assert first.status_code == 200 and first.headers["cf-aig-cache-status"] == "MISS"
    assert len(engine.requests) == 1
    again = client.post(native(gw), json=body, headers={"cf-aig-cache-ttl": "300"})
    assert again.status_code == 200 and again.headers["cf-aig-cache-status"] == "HIT"
    assert again.json() == first.json()
    assert len(engine.requests) == 1, "a hit costs no engine request"
    assert again.headers["cf-aig-log-id"] != first.headers["cf-aig-log-id"]
    assert again.headers["cf-aig-step"] == "0"


def test_a_repeated_stream_is_replayed_as_a_stream_with_new_padding(client, engine, gateway):
    gw = gateway(cache_ttl=300)  # the gateway's own TTL
    body = prompt(stream=True)
    first = client.post(native(gw), json=body)
    again = client.post(native(gw), json=body)
    assert first.headers["cf-aig-cache-status"] == "MISS" and again.headers["cf-aig-cache-status"] == "HIT"
    assert again.headers["content-type"].startswith("text/event-stream")
    assert len(engine.requests) == 1
    assert PADDING.sub(b"", again.content) == PADDING.sub(b"", first.content)
    assert [event for event in events(again) if event != "[DONE]"], "the replay is a stream of events"


def test_skip_cache_a_different_body_and_a_different_key_miss(client, engine, gateway):
    gw = gateway(cache_ttl=300)
    body = prompt()
    assert client.post(native(gw), json=body).headers["cf-aig-cache-status"] == "MISS"
    skipped = client.post(native(gw), json=body, headers={"cf-aig-skip-cache": "true"})
    other_body = client.post(native(gw), json={**body, "max_tokens": 3})
    other_key = client.post(native(gw), json=body, headers={"cf-aig-cache-key": "mine"})
    assert [answer.headers["cf-aig-cache-status"] for answer in (skipped, other_body, other_key)] == ["MISS"] * 3
    assert len(engine.requests) == 4
    by_key = client.post(native(gw), json=prompt(), headers={"cf-aig-cache-key": "mine"})
    assert by_key.headers["cf-aig-cache-status"] == "HIT", "the same cache key, whatever the body"


def test_a_gateway_without_a_ttl_caches_nothing(client, engine, gateway):
    gw = gateway()
    body = prompt()
    client.post(native(gw), json=body)
    assert client.post(native(gw), json=body).headers["cf-aig-cache-status"] == "MISS"
    assert len(engine.requests) == 2


def test_hits_and_misses_are_counted(client, gateway):
    gw = gateway(cache_ttl=300)
    before = scrape(client)
    body = prompt()
    client.post(native(gw), json=body)
    client.post(native(gw), json=body)
    counted = scrape(client) - before
    assert counted.value("wai_gateway_cache_lookups_total", gateway=gw, outcome="hit") == 1
    assert counted.value("wai_gateway_cache_lookups_total", gateway=gw, outcome="miss") == 1
    assert counted.value("wai_gateway_cache_served_bytes_total", gateway=gw) > 0
    assert counted.value("wai_requests_total", model=TEXT_MODEL, status="200") == 2, "a hit counts under its model"


# --- retries, timeouts, fallbacks -------------------------------------------------------------


def test_a_retryable_failure_is_tried_again(client, engine, gateway):
    gw = gateway()
    engine.fail(EngineUnavailable, TEXT_MODEL, times=2)
    answer = client.post(native(gw), json=prompt(), headers={"cf-aig-max-attempts": "3", "cf-aig-retry-delay": "10"})
    assert answer.status_code == 200, answer.text
    assert len(engine.requests) == 3
    [entry] = logs_of(client, gw)
    assert entry["success"] is True and entry["status_code"] == 200


def test_attempts_run_out_with_the_engines_error(client, engine, gateway):
    gw = gateway(retry_max_attempts=2, retry_delay=10, retry_backoff="exponential")
    engine.fail(EngineUnavailable, TEXT_MODEL)
    answer = client.post(native(gw), json=prompt())
    assert answer.status_code == 503 and answer.json()["errors"][0]["code"] == 3040
    assert len(engine.requests) == 2, "the gateway's retry_max_attempts"
    assert answer.headers["cf-aig-log-id"]
    [entry] = logs_of(client, gw)
    assert entry["success"] is False and entry["status_code"] == 503


def test_a_callers_mistake_is_not_retried(client, engine, gateway):
    gw = gateway()
    engine.fail(EngineRejected, "the schema is too deep")
    answer = client.post(native(gw), json=prompt(), headers={"cf-aig-max-attempts": "5", "cf-aig-retry-delay": "0"})
    assert answer.status_code == 400
    assert len(engine.requests) == 1


def test_a_timeout_to_the_first_byte_ends_the_attempt_and_its_engine_request(client, engine, gateway):
    gw = gateway()
    engine.delay = 0.5
    answer = client.post(native(gw), json=prompt(stream=True), headers={"cf-aig-request-timeout": "100"})
    assert answer.status_code == 408 and answer.json()["errors"][0]["code"] == 3007
    assert engine.aborted == engine.requests and len(engine.requests) == 1


def test_the_universal_endpoint_falls_back_to_the_next_step(client, engine, gateway):
    gw = gateway()
    steps = [
        {"provider": "workers-ai", "endpoint": "@cf/nobody/no-such-model", "headers": {}, "query": prompt()},
        {"provider": "workers-ai", "endpoint": TEXT_MODEL, "headers": {}, "query": prompt()},
    ]
    answer = client.post(f"/v1/{ACCOUNT}/{gw}", json=steps)
    assert answer.status_code == 200, answer.text
    assert answer.headers["cf-aig-step"] == "1"
    assert answer.json()["result"]["response"] == engine.text(max_tokens=4)
    [entry] = logs_of(client, gw)
    assert entry["step"] == 1 and entry["model"] == TEXT_MODEL


def test_a_universal_step_that_times_out_falls_back(client, engine, gateway):
    gw = gateway()
    engine.delay = 0.3
    steps = [
        {
            "provider": "workers-ai",
            "endpoint": TEXT_MODEL,
            "headers": {},
            "query": prompt(),
            "config": {"requestTimeout": 50},
        },
        {
            "provider": "workers-ai",
            "endpoint": "v1/chat/completions",
            "headers": {},
            "query": {"model": TEXT_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        },
    ]
    answer = client.post(f"/v1/{ACCOUNT}/{gw}", json=steps)
    assert answer.status_code == 200, answer.text
    assert answer.headers["cf-aig-step"] == "1" and answer.json()["object"] == "chat.completion"
    assert engine.aborted == engine.requests[:1]


def test_when_every_step_fails_the_last_error_answers(client, gateway):
    gw = gateway()
    steps = [
        {"provider": "workers-ai", "endpoint": f"@cf/nobody/m{index}", "headers": {}, "query": prompt()}
        for index in (0, 1)
    ]
    answer = client.post(f"/v1/{ACCOUNT}/{gw}", json=steps)
    assert answer.status_code == 400 and "@cf/nobody/m1" in answer.json()["errors"][0]["message"]
    assert answer.headers["cf-aig-step"] == "1"


# --- the gateway's URLs and forms --------------------------------------------------------------


def test_openai_routes_below_the_gateway(client, engine, gateway):
    gw = gateway(cache_ttl=300)
    chat = {"model": TEXT_MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 3}
    provider = client.post(f"/v1/{ACCOUNT}/{gw}/workers-ai/v1/chat/completions", json=chat)
    compat = client.post(
        f"/v1/{ACCOUNT}/{gw}/compat/chat/completions", json={**chat, "model": f"workers-ai/{TEXT_MODEL}"}
    )
    assert provider.status_code == 200 and compat.status_code == 200, (provider.text, compat.text)
    assert provider.json()["choices"][0]["message"]["content"] == engine.text(max_tokens=3)
    assert compat.json()["model"] == TEXT_MODEL
    wrong = client.post(f"/v1/{ACCOUNT}/{gw}/compat/chat/completions", json={**chat, "model": f"openai/{TEXT_MODEL}"})
    assert wrong.status_code == 400 and "error" in wrong.json()


def test_the_rest_routes_take_the_gateway_from_a_header(client, engine, gateway):
    gw = gateway(cache_ttl=300)
    headers = {"cf-aig-gateway-id": gw}
    body = prompt()
    by_path = client.post(f"/client/v4/accounts/{ACCOUNT}/ai/run/{TEXT_MODEL}", json=body, headers=headers)
    in_body = client.post(
        f"/client/v4/accounts/{ACCOUNT}/ai/run", json={"model": TEXT_MODEL, "input": body}, headers=headers
    )
    assert by_path.headers["cf-aig-cache-status"] == "MISS"
    assert in_body.headers["cf-aig-cache-status"] == "HIT", "the same model and input, the same answer"
    assert in_body.json() == by_path.json()
    chat = {"model": TEXT_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    openai = client.post(f"/client/v4/accounts/{ACCOUNT}/ai/v1/chat/completions", json=chat, headers=headers)
    assert openai.status_code == 200 and openai.headers["cf-aig-cache-status"] == "MISS"
    plain = client.post(f"/client/v4/accounts/{ACCOUNT}/ai/run/{TEXT_MODEL}", json=body)
    assert "cf-aig-log-id" not in plain.headers, "without the header, no gateway"
    assert len(logs_of(client, gw)) == 3


def test_the_binding_gateway_option(client, engine, gateway):
    gw = gateway()
    call = {
        "inputs": prompt(),
        "options": {"gateway": {"id": gw, "cacheTtl": 300, "metadata": {"team": "a"}, "eventId": "e-1"}},
    }
    headers = {"cf-consn-model-id": TEXT_MODEL}
    first = client.post("/ai-gateway/run?version=3", json=call, headers=headers)
    again = client.post("/ai-gateway/run?version=3", json=call, headers=headers)
    assert first.status_code == 200, first.text
    assert "response" in first.json(), "the binding's answer is bare"
    assert (first.headers["cf-aig-cache-status"], again.headers["cf-aig-cache-status"]) == ("MISS", "HIT")
    assert first.headers["cf-aig-event-id"] == "e-1"
    assert len(engine.requests) == 1
    entries = logs_of(client, gw)
    assert {entry["request_type"] for entry in entries} == {"binding"}
    assert json.loads(entries[0]["metadata"]) == {"team": "a"}


# --- limits, authorization, bad options --------------------------------------------------------


def test_a_gateways_rate_limit_answers_429_as_cloudflare(client, gateway):
    gw = gateway(rate_limiting_limit=2, rate_limiting_interval=60, rate_limiting_technique="sliding")
    statuses = [client.post(native(gw), json=prompt()).status_code for _ in range(2)]
    refused = client.post(native(gw), json=prompt())
    assert statuses == [200, 200] and refused.status_code == 429
    body = refused.json()
    assert body["name"] == "AiGatewayError" and body["internalCode"] == 2003
    assert body["error"] == [{"code": 2003, "message": "Rate limited"}]
    assert int(refused.headers["retry-after"]) >= 1


def test_a_gateway_with_authentication_needs_its_header(client, gateway):
    gw = gateway(authentication=True)
    refused = client.post(native(gw), json=prompt())
    assert refused.status_code == 401 and refused.json()["internalCode"] == 2009
    allowed = client.post(native(gw), json=prompt(), headers={"cf-aig-authorization": "Bearer anything"})
    assert allowed.status_code == 200, "an open server has no keys to check the token against"


@pytest.mark.parametrize(
    "header, value",
    [
        ("cf-aig-cache-ttl", "59"),
        ("cf-aig-cache-ttl", "soon"),
        ("cf-aig-max-attempts", "6"),
        ("cf-aig-retry-delay", "5001"),
        ("cf-aig-backoff", "random"),
        ("cf-aig-skip-cache", "yes"),
        ("cf-aig-metadata", "{not json"),
        ("cf-aig-custom-cost", '{"per_token_in": -1}'),
    ],
)
def test_a_bad_option_is_a_400_naming_its_header(client, engine, header, value):
    answer = client.post(native("default"), json=prompt(), headers={header: value})
    assert answer.status_code == 400
    assert header in answer.json()["errors"][0]["message"]
    assert engine.requests == []


def test_an_unknown_gateway_is_not_found(client, engine):
    answer = client.post(native("no-such-gateway"), json=prompt())
    assert answer.status_code == 404 and answer.json()["errors"][0]["code"] == 7002
    assert engine.requests == []


# --- logs ----------------------------------------------------------------------------------------


def test_a_log_holds_tokens_cost_metadata_and_both_bodies_without_the_key(client, engine, gateway):
    gw = gateway()
    metadata = {f"k{index}": index for index in range(7)}
    headers = {"cf-aig-metadata": json.dumps(metadata), "authorization": "Bearer not-a-real-key-123"}
    answer = client.post(native(gw), json=prompt("a logged prompt"), headers=headers)
    [entry] = logs_of(client, gw)
    assert entry["id"] == answer.headers["cf-aig-log-id"]
    assert entry["tokens_out"] == 4 and entry["tokens_in"] > 0 and entry["cached"] is False
    assert entry["ttft"] is not None and 0 <= entry["ttft"] <= entry["duration"]
    assert entry["model_type"] == "text-generation" and entry["request_type"] == "workers-ai"
    assert json.loads(entry["metadata"]) == {f"k{index}": index for index in range(5)}, "the first five entries"
    detail = client.get(f"{GATEWAYS}/{gw}/logs/{entry['id']}").json()["result"]
    assert "not-a-real-key-123" not in json.dumps(detail)
    sent = client.get(f"{GATEWAYS}/{gw}/logs/{entry['id']}/request")
    assert sent.json()["prompt"] == "a logged prompt"
    answered = client.get(f"{GATEWAYS}/{gw}/logs/{entry['id']}/response")
    assert answered.json() == answer.json()


def test_a_payload_off_request_keeps_no_bodies_and_a_log_off_request_no_log(client, gateway):
    gw = gateway()
    client.post(native(gw), json=prompt(), headers={"cf-aig-collect-log-payload": "false"})
    client.post(native(gw), json=prompt(), headers={"cf-aig-collect-log": "false"})
    [entry] = logs_of(client, gw)
    assert client.get(f"{GATEWAYS}/{gw}/logs/{entry['id']}/request").status_code == 404
    assert client.get(f"{GATEWAYS}/{gw}/logs/{entry['id']}/response").status_code == 404


def test_a_custom_cost_replaces_the_hosted_price_in_the_log(client, gateway):
    gw = gateway()
    headers = {"cf-aig-custom-cost": json.dumps({"per_token_in": 0.001, "per_token_out": 0.002})}
    client.post(native(gw), json=prompt(), headers=headers)
    client.post(native(gw), json=prompt(), headers={"cf-aig-custom-cost": json.dumps({"total_cost": 0.5})})
    total, per_token = logs_of(client, gw)  # newest first
    assert per_token["custom_cost"] is True and total["custom_cost"] is True
    assert per_token["cost"] == pytest.approx(per_token["tokens_in"] * 0.001 + per_token["tokens_out"] * 0.002)
    assert total["cost"] == 0.5
