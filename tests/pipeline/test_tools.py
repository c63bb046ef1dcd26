"""Tool calls on the fake engine: what the engine is asked (the answer schema, the prompt), and how
scripted answers come back in each protocol, whole and streamed. The real engine's side (structured
decoding holding the model to the schema) is tests/integration/test_tools.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest

from tests.pipeline.requests import ACCOUNT_PATH, CHAT, run_path
from tests.support.envelopes import openai_error, result, workers_ai_error
from tests.support.fakes import TEXT_MODEL, FakeTextEngine, FakeTokenizer, roomy_fake_settings
from tests.support.servers import ServedApp, serve_app
from tests.support.sse import events, json_events

WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "the city"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "the unit"},
    },
    "required": ["city"],
}
WEATHER = {"name": "get_weather", "description": "Current weather in a city", "parameters": WEATHER_PARAMETERS}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "description": "The time now", "parameters": {"type": "object", "properties": {}}},
}
OPENAI_WEATHER = {"type": "function", "function": WEATHER}
ASK = [{"role": "user", "content": "Weather in Paris?"}]
# The model's answer, one word a token: the fake engine says these words with spaces between them.
CALL_WORDS = ('{"name":', '"get_weather",', '"parameters":', '{"city":', '"Paris",', '"unit":', '"celsius"}}')
CALL_ARGUMENTS = {"city": "Paris", "unit": "celsius"}
TEXT_WORDS = ('{"content":', '"Sunny', "and", "warm", "\\u00e9t\\u00e9", '\\"ok\\"\\n"}')
TEXT_ANSWER = 'Sunny and warm été "ok"\n'


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[ServedApp]:
    """The fakes with room for the tools' system message (the tier's own window is 64 words)."""
    with serve_app(roomy_fake_settings(tmp_path_factory.mktemp("tools"))) as running:
        yield running


@pytest.fixture
def engine(served: ServedApp) -> FakeTextEngine:
    served.engines.reset()
    return served.text_engine


@pytest.fixture(scope="module")
def client(served: ServedApp) -> Iterator[httpx.Client]:
    with served.client() as c:
        yield c


def run(client: httpx.Client, body: dict[str, Any]) -> httpx.Response:
    return client.post(run_path(), json={"messages": ASK, **body})


def chat(client: httpx.Client, body: dict[str, Any]) -> httpx.Response:
    return client.post(CHAT, json={"model": TEXT_MODEL, "messages": ASK, **body})


def streamed(client: httpx.Client, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with client.stream("POST", path, json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        return json_events(events(response))


def schema_asked(engine: FakeTextEngine) -> dict[str, Any]:
    assert engine.last_params is not None and engine.last_params.json_schema is not None
    return engine.last_params.json_schema


def accepts(schema: dict[str, Any], answer: Any) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(answer)


# --- the answer schema and the prompt --------------------------------------------------------------


def test_required_admits_a_call_of_each_tool_matching_its_parameters_and_nothing_else(client, engine):
    engine.script = CALL_WORDS
    run(client, {"tools": [WEATHER, TIME], "tool_choice": "required"}).raise_for_status()
    schema = schema_asked(engine)
    assert accepts(schema, {"name": "get_weather", "parameters": {"city": "Paris"}})
    assert accepts(schema, {"name": "get_time", "parameters": {}})
    assert not accepts(schema, {"name": "get_weather", "parameters": {"unit": "celsius"}})  # city required
    assert not accepts(schema, {"name": "get_weather", "parameters": {"city": "Paris", "unit": "kelvin"}})
    assert not accepts(schema, {"name": "other", "parameters": {}})
    assert not accepts(schema, {"content": "no call"})


def test_a_named_tool_admits_only_that_tool_and_auto_admits_text_too(client, engine):
    engine.script = CALL_WORDS
    run(client, {"tools": [WEATHER, TIME], "tool_choice": {"type": "function", "function": {"name": "get_time"}}})
    named = schema_asked(engine)
    assert accepts(named, {"name": "get_time", "parameters": {}})
    assert not accepts(named, {"name": "get_weather", "parameters": {"city": "Paris"}})
    chat(client, {"tools": [OPENAI_WEATHER]}).raise_for_status()  # auto, the default
    auto = schema_asked(engine)
    assert accepts(auto, {"content": "just words"}) and accepts(
        auto, {"name": "get_weather", "parameters": {"city": "x"}}
    )


def test_none_asks_for_plain_text_and_leaves_the_tools_out_of_the_prompt(client, engine):
    answer = chat(client, {"tools": [OPENAI_WEATHER], "tool_choice": "none"}).json()
    assert engine.last_params.json_schema is None
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": engine.text()}
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert FakeTokenizer().encode("get_weather", add_special_tokens=False)[0] not in engine.last_prompt


def test_schemas_with_definitions_keep_their_references(client, engine):
    parameters = {
        "type": "object",
        "$defs": {"Place": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
        "properties": {"where": {"$ref": "#/$defs/Place"}},
        "required": ["where"],
    }
    engine.script = ('{"name":', '"locate",', '"parameters":', '{"where":', '{"city":', '"Oslo"}}}')
    body = {"tools": [{"name": "locate", "description": "d", "parameters": parameters}], "tool_choice": "required"}
    answer = run(client, body).json()["result"]
    assert answer["tool_calls"] == [{"name": "locate", "arguments": {"where": {"city": "Oslo"}}}]
    schema = schema_asked(engine)
    assert accepts(schema, {"name": "locate", "parameters": {"where": {"city": "Oslo"}}})
    assert not accepts(schema, {"name": "locate", "parameters": {"where": {"town": "Oslo"}}})


def test_the_tools_and_a_past_call_and_its_result_reach_the_prompt(client, engine):
    tokenizer = FakeTokenizer()
    messages = [
        {"role": "system", "content": "Be brief."},
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny-22C-result"},
    ]
    engine.script = TEXT_WORDS
    chat(client, {"messages": messages, "tools": [OPENAI_WEATHER]}).raise_for_status()
    prompt = engine.last_prompt
    for word in ("Sunny-22C-result", "<tool>:", '"Paris"}}', '"get_weather",', "brief.", "functions."):
        assert tokenizer.encode(word, add_special_tokens=False)[0] in prompt, word


# --- answers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("tool", [WEATHER, OPENAI_WEATHER], ids=["workers-ai-shape", "openai-shape"])
def test_run_answers_a_call_as_workers_ai_flat_tool_calls(client, engine, tool):
    engine.script = CALL_WORDS
    body = run(client, {"tools": [tool], "tool_choice": "required"}).json()
    assert body["success"] is True
    assert body["result"]["response"] == ""
    assert body["result"]["tool_calls"] == [{"name": "get_weather", "arguments": CALL_ARGUMENTS}]
    assert body["result"]["usage"]["completion_tokens"] == len(CALL_WORDS)


def test_openai_answers_a_call_with_an_id_json_arguments_and_finish_reason_tool_calls(client, engine):
    engine.script = CALL_WORDS
    body = chat(client, {"tools": [OPENAI_WEATHER], "tool_choice": "required"}).json()
    [choice] = body["choices"]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None and message["role"] == "assistant"
    [call] = message["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == CALL_ARGUMENTS
    assert body["usage"]["completion_tokens"] == len(CALL_WORDS)


def test_auto_answers_text_decoded_from_its_json_string(client, engine):
    engine.script = TEXT_WORDS
    body = chat(client, {"tools": [OPENAI_WEATHER]}).json()
    assert body["choices"][0]["message"] == {"role": "assistant", "content": TEXT_ANSWER}
    assert body["choices"][0]["finish_reason"] == "stop"
    result = run(client, {"tools": [WEATHER]}).json()["result"]
    assert result["response"] == TEXT_ANSWER and result["tool_calls"] == []


def test_streamed_openai_call_deltas_reassemble_to_the_call(client, engine):
    engine.script = CALL_WORDS
    chunks = streamed(client, CHAT, {"model": TEXT_MODEL, "messages": ASK, "tools": [OPENAI_WEATHER]})
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks if chunk["choices"]]
    pieces = [piece for delta in deltas for piece in delta.get("tool_calls", [])]
    first, rest = pieces[0], pieces[1:]
    assert first["index"] == 0 and first["id"].startswith("call_") and first["type"] == "function"
    assert first["function"]["name"] == "get_weather"
    assert len(rest) > 1 and all(set(piece) == {"index", "function"} for piece in rest)  # streamed in parts
    arguments = "".join(piece["function"]["arguments"] for piece in pieces)
    assert json.loads(arguments) == CALL_ARGUMENTS
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert not any(delta.get("content") for delta in deltas)


def test_streamed_auto_text_arrives_in_pieces_and_joins_to_the_answer(client, engine):
    engine.script = TEXT_WORDS
    chunks = streamed(client, CHAT, {"model": TEXT_MODEL, "messages": ASK, "tools": [OPENAI_WEATHER]})
    pieces = [chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks]
    assert "".join(pieces) == TEXT_ANSWER and len([piece for piece in pieces if piece]) > 2
    run_events = streamed(client, run_path(), {"messages": ASK, "tools": [WEATHER]})
    assert "".join(event["response"] for event in run_events) == TEXT_ANSWER


def test_the_run_stream_sends_the_call_in_one_event_before_the_usage(client, engine):
    engine.script = CALL_WORDS
    run_events = streamed(client, run_path(), {"messages": ASK, "tools": [WEATHER], "tool_choice": "required"})
    calls = [event for event in run_events if event.get("tool_calls")]
    assert calls == [{"response": "", "tool_calls": [{"name": "get_weather", "arguments": CALL_ARGUMENTS}]}]
    assert run_events[-2] == {"response": ""} and run_events[-1]["usage"]["completion_tokens"] == len(CALL_WORDS)
    assert run_events.index(calls[0]) < len(run_events) - 2
    assert all(event["response"] == "" for event in run_events)


def test_a_call_cut_by_max_tokens_is_an_error_never_half_a_call(client, engine):
    engine.script = CALL_WORDS
    body = {"tools": [WEATHER], "tool_choice": "required", "max_tokens": 4}
    message = workers_ai_error(run(client, body), 400, 3031)
    assert "max_tokens" in message
    openai_error(chat(client, {**body, "tools": [OPENAI_WEATHER]}), 400, 3031)
    run_events = streamed(client, run_path(), {"messages": ASK, **body})
    assert run_events[-1]["errors"][0]["code"] == 3031 and not any(event.get("tool_calls") for event in run_events)


def test_text_cut_by_max_tokens_is_what_there_is(client, engine):
    engine.script = TEXT_WORDS
    body = chat(client, {"tools": [OPENAI_WEATHER], "max_tokens": 3}).json()
    assert body["choices"][0] == {
        "index": 0,
        "message": {"role": "assistant", "content": "Sunny and"},
        "logprobs": None,
        "finish_reason": "length",
    }


# --- bad tools ---------------------------------------------------------------------------------------

BAD = [
    (
        {"tools": [{**WEATHER, "parameters": {"type": "object", "properties": {"city": {"type": "nonsense"}}}}]},
        "tools.0.parameters",
    ),
    ({"tools": [{**WEATHER, "parameters": {"type": "string", "properties": {}}}]}, "tools.0.parameters"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [WEATHER, WEATHER]}, "tools"),
    ({"tools": [{**WEATHER, "name": "has space"}]}, "tools.0.name"),
    ({"tools": [WEATHER], "response_format": {"type": "json_object"}}, "response_format"),
]


@pytest.mark.parametrize(("body", "param"), BAD, ids=range(len(BAD)))
def test_bad_tools_are_a_400_in_each_protocol(client, engine, body, param):
    message = workers_ai_error(run(client, body), 400, 5006)
    assert message.startswith("AiError: Bad input: Error: ")
    if "tools" in body:  # the same tools in OpenAI's shape
        body = {**body, "tools": [{"type": "function", "function": tool} for tool in body["tools"]]}
    error = openai_error(chat(client, body), 400, 5006)
    assert error["param"] == param.replace("tools.0", "tools.0.function")
    assert engine.requests == []


# --- one verdict per tool, in every form ------------------------------------------------------------

DESCRIBED = {"name": "get_weather", "description": "Current weather", "parameters": WEATHER_PARAMETERS}
NO_DESCRIPTION = {"name": "get_weather", "parameters": WEATHER_PARAMETERS}
NO_PARAMETERS = {"name": "get_time", "description": "The time now"}
NAME_ONLY = {"name": "get_time"}
EMPTY_PARAMETERS = {"name": "get_time", "parameters": {"type": "object"}}
ACCEPTED = [DESCRIBED, NO_DESCRIPTION, NO_PARAMETERS, NAME_ONLY, EMPTY_PARAMETERS]
REFUSED = [
    {"description": "no name", "parameters": WEATHER_PARAMETERS},
    {"name": "", "parameters": WEATHER_PARAMETERS},
    {"name": "has space"},
    {"name": "x" * 65},
    {"name": 7},
    {"name": "get_time", "description": 7},
    {"name": "get_time", "parameters": ["not", "an", "object"]},
    {"name": "get_time", "parameters": {"type": "string"}},
    {"name": "get_time", "parameters": {"type": "object", "properties": {"a": {"type": "nonsense"}}}},
]


def verdicts(client: httpx.Client, tool: dict[str, Any]) -> dict[str, int]:
    """The status of one tool sent every way a client can send it."""
    wrapped = {"type": "function", "function": tool}
    sent = {
        "prompt form, flat": (run_path(), {"prompt": "Weather in Paris?", "tools": [tool]}),
        "prompt form, wrapped": (run_path(), {"prompt": "Weather in Paris?", "tools": [wrapped]}),
        "messages form, flat": (run_path(), {"messages": ASK, "tools": [tool]}),
        "messages form, wrapped": (run_path(), {"messages": ASK, "tools": [wrapped]}),
        "/v1": (CHAT, {"model": TEXT_MODEL, "messages": ASK, "tools": [wrapped]}),
    }
    return {
        way: client.post(path, json={**body, "tool_choice": "none"}).status_code for way, (path, body) in sent.items()
    }


@pytest.mark.parametrize("tool", ACCEPTED, ids=["described", "no-description", "no-parameters", "name-only", "empty"])
def test_a_tool_is_accepted_alike_in_the_prompt_form_the_messages_form_and_v1(client, engine, tool):
    engine.script = TEXT_WORDS
    assert set(verdicts(client, tool).values()) == {200}


@pytest.mark.parametrize("tool", REFUSED, ids=range(len(REFUSED)))
def test_a_bad_tool_is_refused_alike_in_the_prompt_form_the_messages_form_and_v1(client, engine, tool):
    assert set(verdicts(client, tool).values()) == {400}
    assert engine.requests == []


def test_the_published_schema_takes_tools_in_both_forms_and_asks_only_for_a_name(client):
    schema = result(client.get(f"{ACCOUNT_PATH}/models/schema", params={"model": TEXT_MODEL}))
    for form in schema["input"]["oneOf"]:
        for shape in form["properties"]["tools"]["items"]["oneOf"]:
            function = shape["properties"].get("function", shape)
            assert function["required"] == ["name"] and set(function["properties"]) == {
                "name",
                "description",
                "parameters",
            }
