"""The official `openai` SDK's Responses API against the real server: a response whole and streamed, a
function tool, a JSON schema, a stored conversation continued, and refusals raised as the SDK's
exceptions."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from tests.support.metrics import scrape
from tests.support.repo import STAND_IN

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(params=["/v1", "/client/v4/accounts/test-account/ai/v1"])
def sdk(server, request):
    with openai.OpenAI(base_url=server.base_url + request.param, api_key=server.api_key, max_retries=0) as client:
        yield client


def test_a_response_whole_and_streamed(sdk, server):
    before = scrape(server).value("wai_requests_total", protocol="responses")
    asked = {"model": STAND_IN, "input": "What is the capital of France?", "max_output_tokens": 24, "temperature": 0}
    whole = sdk.responses.create(**asked)
    assert whole.output_text.strip() and whole.status in ("completed", "incomplete")
    assert whole.usage.total_tokens == whole.usage.input_tokens + whole.usage.output_tokens
    with sdk.responses.stream(**asked) as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == whole.output_text
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert scrape(server).value("wai_requests_total", protocol="responses") == before + 2


def test_a_function_tool(sdk):
    called = sdk.responses.create(
        model=STAND_IN, input="What is the weather in Paris?", tools=[WEATHER], tool_choice="required", temperature=0
    )
    [call] = [item for item in called.output if item.type == "function_call"]
    assert call.name == "get_weather" and isinstance(json.loads(call.arguments)["city"], str)
    answered = sdk.responses.create(
        model=STAND_IN,
        tools=[WEATHER],
        tool_choice="none",
        max_output_tokens=24,
        input=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 22 C"},
        ],
    )
    assert answered.output_text.strip()


def test_a_json_schema(sdk):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    response = sdk.responses.create(
        model=STAND_IN,
        input="Name the capital of France as JSON.",
        max_output_tokens=60,
        text={"format": {"type": "json_schema", "name": "city", "schema": schema, "strict": True}},
    )
    jsonschema.validate(json.loads(response.output_text), schema)


def test_a_stored_conversation_continues_and_is_deleted(sdk):
    first = sdk.responses.create(model=STAND_IN, input="Name a French city.", max_output_tokens=12, temperature=0)
    later = sdk.responses.create(
        model=STAND_IN, input="And its river?", previous_response_id=first.id, max_output_tokens=12
    )
    assert later.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert sdk.responses.retrieve(first.id).output_text == first.output_text
    sdk.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(first.id)


def test_what_cannot_be_honoured_raises_the_sdks_bad_request(sdk):
    with pytest.raises(openai.BadRequestError, match="web_search"):
        sdk.responses.create(model=STAND_IN, input="Hi", tools=[{"type": "web_search"}])
    with pytest.raises(openai.BadRequestError, match="reasoning"):
        sdk.responses.create(model=STAND_IN, input="Hi", reasoning={"effort": "high"})
    with pytest.raises(openai.NotFoundError):
        sdk.responses.create(model="@cf/nobody/nothing", input="Hi")
