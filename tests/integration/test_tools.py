"""Tool calls on the real engine over HTTP: the openai SDK, the run endpoint in both tool shapes,
LangChain's Cloudflare chat model, streams, a multi-turn tool loop and bad tools.

The default model (SmolLM2-135M) is weak: the guarantees checked here come from structured decoding
(every returned call parses and matches its tool's schema), not from the model choosing well."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pytest
from playwright.sync_api import expect
from pydantic import BaseModel, Field

from tests.integration.browser import chromium, open_playground
from tests.integration.session import API_KEYS
from tests.support.sse import events, json_events

MODEL = "@cf/meta/llama-3-8b-instruct"
WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "The city", "maxLength": 20},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "The unit"},
    },
    "required": ["city", "unit"],
}
TIME_PARAMETERS = {
    "type": "object",
    "properties": {"timezone": {"type": "string", "description": "An IANA zone", "maxLength": 24}},
    "required": ["timezone"],
}
WEATHER = {"name": "get_weather", "description": "The current weather in a city", "parameters": WEATHER_PARAMETERS}
TIME = {"name": "get_time", "description": "The time now in a time zone", "parameters": TIME_PARAMETERS}
TOOLS = [{"type": "function", "function": WEATHER}, {"type": "function", "function": TIME}]
SCHEMAS = {"get_weather": WEATHER_PARAMETERS, "get_time": TIME_PARAMETERS}
ASK = [{"role": "user", "content": "What is the weather in Paris, in celsius?"}]
ROOM = {"max_tokens": 120, "temperature": 0}  # room for a call; greedy, so repeated requests agree


@pytest.fixture(scope="module")
def sdk(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key, max_retries=0, timeout=120)


def valid_call(name: str, arguments: Any) -> bool:
    jsonschema.validate(arguments, SCHEMAS[name])
    return True


def create(sdk: openai.OpenAI, **body: Any):
    return sdk.chat.completions.create(model=MODEL, **{"messages": ASK, "tools": TOOLS, **ROOM, **body})


# --- the openai SDK ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "choice", ["required", {"type": "function", "function": {"name": "get_time"}}], ids=["required", "named"]
)
def test_openai_sdk_gets_a_call_that_matches_the_tool_schema(sdk, choice):
    reply = create(sdk, tool_choice=choice)
    [answer] = reply.choices
    assert answer.finish_reason == "tool_calls" and answer.message.content is None
    [call] = answer.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert valid_call(call.function.name, json.loads(call.function.arguments))
    if isinstance(choice, dict):
        assert call.function.name == "get_time"
    assert reply.usage.completion_tokens > 0 and reply.usage.total_tokens == (
        reply.usage.prompt_tokens + reply.usage.completion_tokens
    )


def test_auto_answers_a_valid_call_or_text(sdk):
    [answer] = create(sdk).choices
    if answer.message.tool_calls:
        [call] = answer.message.tool_calls
        assert answer.finish_reason == "tool_calls" and answer.message.content is None
        assert valid_call(call.function.name, json.loads(call.function.arguments))
    else:
        assert isinstance(answer.message.content, str) and answer.finish_reason in ("stop", "length")


def test_none_answers_text(sdk):
    [answer] = create(sdk, tool_choice="none", max_tokens=20).choices
    assert answer.message.tool_calls is None and answer.message.content
    assert answer.finish_reason in ("stop", "length")


def test_streamed_call_deltas_reassemble_to_the_same_call(sdk):
    whole = create(sdk, tool_choice="required").choices[0].message.tool_calls[0]
    pieces, finish_reasons = [], []
    for chunk in create(sdk, tool_choice="required", stream=True):
        for choice in chunk.choices:
            pieces += choice.delta.tool_calls or []
            finish_reasons.append(choice.finish_reason)
    assert pieces[0].id.startswith("call_") and pieces[0].function.name == whole.function.name
    assert {piece.index for piece in pieces} == {0}
    arguments = "".join(piece.function.arguments or "" for piece in pieces)
    assert json.loads(arguments) == json.loads(whole.function.arguments)
    assert finish_reasons[-1] == "tool_calls"


# --- the run endpoint -------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["workers_ai", "openai"])
def test_run_endpoint_answers_flat_tool_calls_for_both_tool_shapes(client, server, shape):
    tools = [WEATHER, TIME] if shape == "workers_ai" else TOOLS
    response = client.post(server.run_url(), json={"messages": ASK, "tools": tools, "tool_choice": "required", **ROOM})
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    [call] = result["tool_calls"]
    assert set(call) == {"name", "arguments"} and isinstance(call["arguments"], dict)
    assert valid_call(call["name"], call["arguments"])
    assert result["response"] == "" and result["usage"]["completion_tokens"] > 0


def test_tool_choice_on_the_run_endpoint_names_the_tool(client, server):
    body = {
        "messages": ASK,
        "tools": [WEATHER, TIME],
        "tool_choice": {"type": "function", "function": {"name": "get_time"}},
    }
    result = client.post(server.run_url(), json={**body, **ROOM}).json()["result"]
    [call] = result["tool_calls"]
    assert call["name"] == "get_time" and valid_call("get_time", call["arguments"])


def test_the_run_stream_carries_the_call_in_an_event(client, server):
    body = {"messages": ASK, "tools": [WEATHER], "tool_choice": "required", "stream": True, **ROOM}
    with client.stream("POST", server.run_url(), json=body) as response:
        assert response.status_code == 200
        sent = json_events(events(response))
    [event] = [event for event in sent if event.get("tool_calls")]
    [call] = event["tool_calls"]
    assert call["name"] == "get_weather" and valid_call("get_weather", call["arguments"])
    assert sent[-1]["usage"]["completion_tokens"] > 0


class Person(BaseModel):
    """A person's name and age."""

    name: str = Field(description="The person's name", max_length=20)
    age: int = Field(description="The person's age in years", ge=0, le=150)


def test_langchain_with_structured_output_gets_the_schema_back(server):
    from langchain_cloudflare import ChatCloudflareWorkersAI

    chat = ChatCloudflareWorkersAI(
        model=MODEL,
        account_id="test-account",
        api_token=server.api_key,
        base_url=f"{server.base_url}/client/v4",
        temperature=0,
        max_tokens=100,
    )
    person = chat.with_structured_output(Person).invoke("Invent a person called Ada who is 36.")
    assert isinstance(person, Person)


# --- a tool loop ------------------------------------------------------------------------------------


def with_result(call: Any, result: str) -> list[dict[str, Any]]:
    """The conversation after `call` was made and answered with `result`."""
    return [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": result},
    ]


def test_a_tool_loop_call_result_then_a_text_answer(sdk, tokenizer):
    call = create(sdk, tool_choice={"type": "function", "function": {"name": "get_weather"}}).choices[0]
    [made] = call.message.tool_calls
    short, long = "18", "18 degrees celsius, light rain from the west and a strong breeze"
    final = create(sdk, messages=with_result(made, long), tool_choice="none", max_tokens=30)
    assert final.choices[0].message.content and final.choices[0].message.tool_calls is None
    # The result reached the prompt: only the result differs, and the prompt grows by its tokens.
    shorter = create(sdk, messages=with_result(made, short), tool_choice="none", max_tokens=1)
    grown = final.usage.prompt_tokens - shorter.usage.prompt_tokens
    assert grown == len(tokenizer.encode(long, add_special_tokens=False)) - len(
        tokenizer.encode(short, add_special_tokens=False)
    )


# --- bad tools --------------------------------------------------------------------------------------

BAD_TOOLS = [
    {"tools": [{**WEATHER, "parameters": {"type": "object", "properties": {"city": {"type": 5}}}}]},
    {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "no_such_tool"}}},
    {"tool_choice": "required"},
]


@pytest.mark.parametrize("bad", BAD_TOOLS, ids=["not-a-schema", "unknown-name", "required-without-tools"])
def test_bad_tools_are_a_400_in_each_protocol(client, server, sdk, bad):
    response = client.post(server.run_url(), json={"messages": ASK, **bad})
    assert response.status_code == 400, response.text
    [error] = response.json()["errors"]
    assert error["code"] == 5006 and error["message"].startswith("AiError: Bad input: Error: ")
    if "tools" in bad:
        bad = {**bad, "tools": [{"type": "function", "function": tool} for tool in bad["tools"]]}
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(model=MODEL, messages=ASK, **bad)
    assert refused.value.status_code == 400 and refused.value.body["param"].split(".")[0] in ("tools", "tool_choice")


# --- the playground ---------------------------------------------------------------------------------


def test_the_playground_shows_a_tool_call(server):
    with chromium() as browser:
        page = browser.new_page()
        open_playground(page, server.base_url, API_KEYS[0])
        page.check("#tools-on")
        page.select_option("#tool-choice", "required")
        page.fill("#input", "What is the weather in Paris?")
        page.press("#input", "Enter")
        expect(page.locator("#send")).to_be_enabled(timeout=120_000)
        shown = page.locator("#messages li.assistant .tool-call")
        expect(shown).to_have_count(1)
        text = shown.text_content() or ""
        tools = json.loads(page.input_value("#tools"))
        assert text.startswith("get_weather(") and text.endswith(")")
        jsonschema.validate(json.loads(text[len("get_weather(") : -1]), tools[0]["parameters"])
        # The call stays in the conversation: the next turn sends it back, and is answered in words.
        page.select_option("#tool-choice", "none")
        page.fill("#input", "Thanks. Say it in one word.")
        with page.expect_request(lambda request: "/ai/run/" in request.url) as sent:
            page.press("#input", "Enter")
        expect(page.locator("#send")).to_be_enabled(timeout=120_000)
        expect(page.locator("#error")).to_be_hidden()
        [past] = [message for message in sent.value.post_data_json["messages"] if message.get("tool_calls")]
        assert past["role"] == "assistant" and past["tool_calls"][0]["name"] == "get_weather"
