"""The /v1 routes answer a mistake as OpenAI's own API does (README, "Errors"), and the run endpoint
keeps Workers AI's answer to the same mistake."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.pipeline.requests import CHAT, COMPLETIONS, QUESTION, run_path
from tests.support.envelopes import openai_error, workers_ai_error
from tests.support.fakes import TEXT_MODEL, fake_settings
from tests.support.servers import ServedApp, serve_app

CHAT_BODY = {"model": TEXT_MODEL, "messages": QUESTION}


@pytest.mark.parametrize(
    ("path", "body", "param", "code"),
    [
        (CHAT, {"model": TEXT_MODEL}, "messages", "missing_required_parameter"),
        (COMPLETIONS, {"model": TEXT_MODEL}, "prompt", "missing_required_parameter"),
        (CHAT, {"messages": QUESTION}, "model", "missing_required_parameter"),
        (CHAT, {**CHAT_BODY, "max_tokens": "16"}, "max_tokens", "invalid_type"),
        (CHAT, {**CHAT_BODY, "temperature": "0.5"}, "temperature", "invalid_type"),
        (CHAT, {**CHAT_BODY, "messages": "Hi"}, "messages", "invalid_type"),
        (CHAT, {**CHAT_BODY, "temperature": 2.5}, "temperature", "5006"),  # out of range: OpenAI's own is null
    ],
)
def test_bad_fields_carry_openais_codes(client, engine, path, body, param, code):
    error = openai_error(client.post(path, json=body), 400, code)
    assert (error["param"], error["type"]) == (param, "invalid_request_error")
    assert engine.requests == []


def test_a_body_that_is_not_json_is_400(client):
    error = openai_error(client.post(CHAT, content=b"{nope"), 400, 5006)
    assert "not valid JSON" in error["message"] and error["param"] is None


def test_no_route_is_404_as_openais_invalid_url(client):
    for method, path in (("POST", "/v1/nothing/here"), ("GET", CHAT)):
        error = openai_error(client.request(method, path), 404, 7000)
        assert error["type"] == "invalid_request_error"
    # The Workers AI paths keep the hosted 400 / 7000.
    workers_ai_error(client.get(run_path()), 400, 7000)


def test_a_body_over_the_limit_is_413(client):
    openai_error(client.post(CHAT, content=b"x" * 1_000_001), 413, 3006)


@pytest.fixture(scope="module")
def one_a_minute(tmp_path_factory) -> Iterator[ServedApp]:
    keys = [{"name": "slow", "key": "one-a-minute", "requests_per_minute": 1}]
    with serve_app(fake_settings(tmp_path_factory.mktemp("one-a-minute"), keys=keys)) as served:
        yield served


def test_a_keys_own_rate_limit_is_openais_rate_limit_exceeded(one_a_minute):
    with one_a_minute.client(headers={"Authorization": "Bearer one-a-minute"}) as client:
        assert client.post(CHAT, json=CHAT_BODY).status_code == 200
        refused: httpx.Response = client.post(CHAT, json=CHAT_BODY)
        wrong_key = client.post(CHAT, json=CHAT_BODY, headers={"Authorization": "Bearer nope"})
    error = openai_error(refused, 429, "rate_limit_exceeded")
    assert error["type"] == "requests" and int(refused.headers["retry-after"]) >= 1
    assert error["message"].startswith("Rate limit reached for requests")
    error = openai_error(wrong_key, 401, "invalid_api_key")
    assert error["type"] == "invalid_request_error"
