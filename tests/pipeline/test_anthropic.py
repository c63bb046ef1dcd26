"""Anthropic's Messages API on the fake engine: the message whole and its exact event sequence, tool
use and tool results both ways, count_tokens, keys in `x-api-key`, and errors in Anthropic's shape.
The official SDK against the real engine: tests/integration/test_anthropic_sdk.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.fakes import TEXT_MODEL, FakeTextEngine, FakeTokenizer, roomy_fake_settings
from tests.support.servers import ServedApp, serve_app

KEY = "anthropic-test-key"
PATHS = ["/v1/messages", "/client/v4/accounts/a/ai/v1/messages"]
ASK = [{"role": "user", "content": "Weather in Paris?"}]
WEATHER = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CALL_WORDS = ('{"name":', '"get_weather",', '"parameters":', '{"city":', '"Paris"}}')


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[ServedApp]:
    """The fakes with a key, and room for the tools' system message."""
    with serve_app(roomy_fake_settings(tmp_path_factory.mktemp("anthropic"), api_keys=[KEY])) as running:
        yield running


@pytest.fixture
def engine(served: ServedApp) -> FakeTextEngine:
    served.engines.reset()
    return served.text_engine


@pytest.fixture(scope="module")
def client(served: ServedApp) -> Iterator[httpx.Client]:
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=served.base_url, headers=headers, timeout=10) as c:
        yield c


def message(client: httpx.Client, path: str = PATHS[0], **body: Any) -> httpx.Response:
    return client.post(path, json={"model": TEXT_MODEL, "max_tokens": 5, "messages": ASK, **body})


def named_events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """Each event's name and data; asserts the framing is exactly Anthropic's."""
    raw = response.read().decode()
    assert raw.endswith("\n\n"), raw[-200:]
    found = []
    for chunk in raw[:-2].split("\n\n"):
        name_line, data_line = chunk.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: "), chunk
        data = json.loads(data_line.removeprefix("data: "))
        assert data["type"] == name_line.removeprefix("event: ")
        found.append((data["type"], data))
    return found


@pytest.mark.parametrize("path", PATHS)
def test_a_message_whole(client, engine, path):
    body = message(client, path).json()
    assert body["type"] == "message" and body["role"] == "assistant" and body["model"] == TEXT_MODEL
    assert body["id"].startswith("msg_")
    assert body["content"] == [{"type": "text", "text": engine.text(max_tokens=5)}]
    assert body["stop_reason"] == "max_tokens" and body["stop_sequence"] is None
    prompt_tokens = len(engine.last_prompt)
    assert body["usage"] == {
        "input_tokens": prompt_tokens,
        "output_tokens": 5,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }
    assert engine.last_params.max_tokens == 5


def test_a_whole_answer_that_ends_by_itself_is_end_turn(client, engine):
    engine.script = ("Hi", "there")
    assert message(client).json()["stop_reason"] == "end_turn"


def test_a_message_streamed_is_anthropics_event_sequence(client, engine):
    with client.stream(
        "POST", PATHS[0], json={"model": TEXT_MODEL, "max_tokens": 3, "messages": ASK, "stream": True}
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        seen = named_events(r)
    names = [name for name, _ in seen]
    assert names == ["message_start", "content_block_start"] + ["content_block_delta"] * 3 + [
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = seen[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["usage"]["input_tokens"] > 0
    assert seen[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    text = "".join(data["delta"]["text"] for name, data in seen if name == "content_block_delta")
    assert text == engine.text(max_tokens=3)
    assert seen[-2][1]["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert seen[-2][1]["usage"] == {**start["usage"], "output_tokens": 3}


def test_a_tool_use_whole_and_streamed(client, engine):
    engine.script = CALL_WORDS
    body = message(client, max_tokens=20, tools=[WEATHER], tool_choice={"type": "any"}).json()
    (block,) = body["content"]
    assert block["type"] == "tool_use" and block["name"] == "get_weather" and block["input"] == {"city": "Paris"}
    assert body["stop_reason"] == "tool_use"
    request = {"model": TEXT_MODEL, "max_tokens": 20, "messages": ASK, "stream": True, "tools": [WEATHER]}
    with client.stream("POST", PATHS[0], json={**request, "tool_choice": {"type": "tool", "name": "get_weather"}}) as r:
        seen = named_events(r)
    starts = [data for name, data in seen if name == "content_block_start"]
    assert [s["content_block"]["type"] for s in starts] == ["tool_use"]
    assert starts[0]["content_block"]["name"] == "get_weather" and starts[0]["content_block"]["input"] == {}
    partial = "".join(d["delta"]["partial_json"] for n, d in seen if n == "content_block_delta")
    assert json.loads(partial) == {"city": "Paris"}
    assert seen[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_a_tool_result_reaches_the_prompt_as_a_tool_turn(client, engine):
    conversation = [
        *ASK,
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny-22C-result"}]},
    ]
    engine.script = ('{"content":', '"Sunny."}')  # with tools, a text answer is decoded from its JSON string
    answered = message(client, max_tokens=20, messages=conversation, tools=[WEATHER], system="Be brief.")
    assert answered.json()["content"] == [{"type": "text", "text": "Sunny."}], answered.text
    tokenizer = FakeTokenizer()
    for word in ("Sunny-22C-result", "<tool>:", "brief.", '"get_weather",'):
        assert tokenizer.encode(word, add_special_tokens=False)[0] in engine.last_prompt, word


def test_count_tokens_is_what_a_message_counts(client, engine):
    counted = client.post(f"{PATHS[0]}/count_tokens", json={"model": TEXT_MODEL, "messages": ASK, "tools": [WEATHER]})
    assert counted.status_code == 200
    used = message(client, tools=[WEATHER], tool_choice={"type": "none"}).json()["usage"]["input_tokens"]
    with_tools = counted.json()["input_tokens"]
    assert (
        with_tools
        > client.post(f"{PATHS[0]}/count_tokens", json={"model": TEXT_MODEL, "messages": ASK}).json()["input_tokens"]
    )
    assert used == len(engine.last_prompt) and with_tools > 0


def anthropic_error(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == kind, body
    return body["error"]["message"]


@pytest.mark.parametrize(
    ("change", "status", "kind", "words"),
    [
        ({"max_tokens": None}, 400, "invalid_request_error", "max_tokens"),
        ({"temperature": 1.5}, 400, "invalid_request_error", "temperature"),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, 400, "invalid_request_error", "thinking"),
        ({"model": "@cf/no/such-model"}, 404, "not_found_error", "@cf/no/such-model"),
        ({"max_tokens": 4096}, 400, "invalid_request_error", "context window"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]},
            400,
            "invalid_request_error",
            "image blocks are not supported",
        ),
        ({"tool_choice": {"type": "tool", "name": "nope"}, "tools": [WEATHER]}, 400, "invalid_request_error", "nope"),
    ],
)
def test_bad_requests_are_anthropic_errors(client, engine, change, status, kind, words):
    body = {"model": TEXT_MODEL, "max_tokens": 5, "messages": ASK, **change}
    body = {k: v for k, v in body.items() if v is not None}
    assert words in anthropic_error(client.post(PATHS[0], json=body), status, kind)
    assert engine.requests == []


def test_keys_come_as_x_api_key_or_bearer(served, engine):
    body = {"model": TEXT_MODEL, "max_tokens": 2, "messages": ASK}
    url = f"{served.base_url}{PATHS[0]}"
    assert httpx.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    anthropic_error(httpx.post(url, json=body, headers={"x-api-key": "wrong"}), 401, "authentication_error")
    anthropic_error(httpx.post(url, json=body), 401, "authentication_error")
