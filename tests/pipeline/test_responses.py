"""OpenAI's Responses API on the fake engine: the response whole and its typed events, function calls and
their outputs both ways, `text.format`, stored responses (`previous_response_id`, GET, DELETE, the bound)
and refusals in OpenAI's shape. The official SDK against the real engine:
tests/integration/test_openai_responses.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.envelopes import openai_error
from tests.support.fakes import TEXT_MODEL, FakeTextEngine, FakeTokenizer, roomy_fake_settings
from tests.support.servers import ServedApp, serve_app

PATHS = ["/v1/responses", "/client/v4/accounts/a/ai/v1/responses"]
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CALL_WORDS = ('{"name":', '"get_weather",', '"parameters":', '{"city":', '"Paris"}}')


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[ServedApp]:
    """The fakes with room for the tools' system message, and a store of three responses."""
    with serve_app(roomy_fake_settings(tmp_path_factory.mktemp("responses"), responses={"max_stored": 3})) as running:
        yield running


@pytest.fixture
def engine(served: ServedApp) -> FakeTextEngine:
    served.engines.reset()
    return served.text_engine


@pytest.fixture(scope="module")
def client(served: ServedApp) -> Iterator[httpx.Client]:
    with served.client() as c:
        yield c


def create(client: httpx.Client, path: str = PATHS[0], **body: Any) -> httpx.Response:
    return client.post(path, json={"model": TEXT_MODEL, "input": "Weather in Paris?", **body})


def typed_events(response: httpx.Response) -> list[dict[str, Any]]:
    """Each event's data, after checking the framing and the sequence numbers."""
    raw = response.read().decode()
    found = []
    for chunk in raw[:-2].split("\n\n"):
        name_line, data_line = chunk.split("\n")
        data = json.loads(data_line.removeprefix("data: "))
        assert name_line == f"event: {data['type']}"
        found.append(data)
    assert [event["sequence_number"] for event in found] == list(range(len(found)))
    return found


@pytest.mark.parametrize("path", PATHS)
def test_a_response_whole(client, engine, path):
    body = create(client, path, instructions="Be brief.", max_output_tokens=4).json()
    assert body["object"] == "response" and body["id"].startswith("resp_") and body["model"] == TEXT_MODEL
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}
    [message] = body["output"]
    assert message["type"] == "message" and message["role"] == "assistant" and message["status"] == "completed"
    assert message["content"][0] == {
        "type": "output_text",
        "text": engine.text(max_tokens=4),
        "annotations": [],
        "logprobs": [],
    }
    assert body["usage"]["input_tokens"] == len(engine.last_prompt) and body["usage"]["output_tokens"] == 4
    assert body["instructions"] == "Be brief." and body["max_output_tokens"] == 4 and body["store"] is True
    assert FakeTokenizer().encode("brief.", add_special_tokens=False)[0] in engine.last_prompt


def test_an_answer_that_ends_by_itself_is_completed(client, engine):
    engine.script = ("Sunny.",)
    assert create(client).json()["status"] == "completed"


def test_a_stream_is_the_typed_event_sequence(client, engine):
    with client.stream(
        "POST", PATHS[0], json={"model": TEXT_MODEL, "input": "Hi", "max_output_tokens": 3, "stream": True}
    ) as r:
        assert r.status_code == 200
        seen = typed_events(r)
    kinds = [event["type"] for event in seen]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 3,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    text = "".join(event["delta"] for event in seen if event["type"] == "response.output_text.delta")
    final = seen[-1]["response"]
    assert text == engine.text(max_tokens=3) == final["output"][0]["content"][0]["text"]
    assert final["usage"]["output_tokens"] == 3 and seen[0]["response"]["status"] == "in_progress"


def test_a_function_call_whole_and_streamed_then_its_output_goes_back(client, engine):
    engine.script = CALL_WORDS
    [call] = create(client, tools=[WEATHER], tool_choice="required").json()["output"]
    assert call["type"] == "function_call" and call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"city": "Paris"} and call["call_id"].startswith("call_")
    named = {"type": "function", "name": "get_weather"}
    body = {"model": TEXT_MODEL, "input": "Weather?", "tools": [WEATHER], "tool_choice": named, "stream": True}
    with client.stream("POST", PATHS[0], json=body) as r:
        seen = typed_events(r)
    arguments = "".join(e["delta"] for e in seen if e["type"] == "response.function_call_arguments.delta")
    assert json.loads(arguments) == {"city": "Paris"}
    assert seen[-1]["response"]["output"][0]["arguments"] == arguments
    engine.script = ('{"content":', '"Sunny."}')
    items = [
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": call["call_id"], "name": "get_weather", "arguments": call["arguments"]},
        {"type": "function_call_output", "call_id": call["call_id"], "output": "Sunny-22C-result"},
    ]
    answered = create(client, input=items, tools=[WEATHER]).json()
    assert answered["output"][0]["content"][0]["text"] == "Sunny."
    assert FakeTokenizer().encode("Sunny-22C-result", add_special_tokens=False)[0] in engine.last_prompt


def test_text_format_reaches_the_engine_as_its_schema(client, engine):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    engine.script = ('{"city":', '"Paris"}')
    body = create(client, text={"format": {"type": "json_schema", "name": "city", "schema": schema}}).json()
    assert engine.last_params.json_schema == schema and json.loads(body["output"][0]["content"][0]["text"])
    assert body["text"]["format"]["schema"] == schema


def test_a_stored_response_continues_is_read_and_deleted(client, engine):
    first = create(client, input="Name-a-city", max_output_tokens=3).json()
    later = create(client, input="Its-river?", previous_response_id=first["id"]).json()
    tokens = FakeTokenizer()
    for word in ("Name-a-city", "Its-river?", engine.words(max_tokens=3)[-1]):
        assert tokens.encode(word, add_special_tokens=False)[0] in engine.last_prompt, word
    assert later["previous_response_id"] == first["id"]
    assert client.get(f"{PATHS[0]}/{first['id']}").json() == first
    assert client.delete(f"{PATHS[0]}/{first['id']}").json() == {
        "id": first["id"],
        "object": "response.deleted",
        "deleted": True,
    }
    openai_error(client.get(f"{PATHS[0]}/{first['id']}"), 404, 3047)
    gone = create(client, input="x", previous_response_id=first["id"])
    assert openai_error(gone, 404, 3047)["param"] == "previous_response_id"


def test_store_false_keeps_nothing_and_the_store_is_bounded(client, engine):
    unkept = create(client, store=False).json()
    openai_error(client.get(f"{PATHS[0]}/{unkept['id']}"), 404, 3047)
    kept = [create(client).json()["id"] for _ in range(4)]  # the store holds three
    openai_error(client.get(f"{PATHS[0]}/{kept[0]}"), 404, 3047)
    assert all(client.get(f"{PATHS[0]}/{rid}").status_code == 200 for rid in kept[1:])


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools.0.type"),
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"input": [{"type": "input_image", "image_url": "x"}]}, None),
        ({"temperature": 3}, "temperature"),
        ({"tool_choice": {"type": "function", "name": "nope"}, "tools": [WEATHER]}, "tool_choice"),
    ],
)
def test_what_cannot_be_honoured_is_a_400_naming_it(client, engine, change, param):
    error = openai_error(create(client, **change), 400)
    if param is not None:
        assert error["param"] == param, error
    assert engine.requests == []
