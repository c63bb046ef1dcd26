"""The official `anthropic` Python SDK against the real server, base URL pointed at wai: a message whole
and streamed, count_tokens, a tool loop, and errors raised as the SDK's exceptions."""

from __future__ import annotations

import anthropic
import pytest

from tests.support.metrics import scrape
from tests.support.repo import STAND_IN

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
# This SDK's `messages.create` no longer takes sampling fields; the API (and wai) still do.
GREEDY = {"extra_body": {"temperature": 0}}
WEATHER = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(params=["", "/client/v4/accounts/test-account/ai"])
def sdk(server, request):
    with anthropic.Anthropic(base_url=server.base_url + request.param, api_key=server.api_key, max_retries=0) as client:
        yield client


def test_a_message_and_its_tokens_counted_beforehand(sdk, server):
    before = scrape(server).value("wai_requests_total", protocol="anthropic")
    counted = sdk.messages.count_tokens(model=STAND_IN, messages=QUESTION, system="Answer in one word.")
    message = sdk.messages.create(
        model=STAND_IN, max_tokens=16, messages=QUESTION, system="Answer in one word.", **GREEDY
    )
    assert message.role == "assistant" and message.content[0].type == "text" and message.content[0].text.strip()
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens == counted.input_tokens > 5
    assert 1 <= message.usage.output_tokens <= 16
    assert scrape(server).value("wai_requests_total", protocol="anthropic") == before + 2


def test_a_stream_says_what_the_whole_message_says(sdk):
    whole = sdk.messages.create(model=STAND_IN, max_tokens=24, messages=QUESTION, **GREEDY)
    with sdk.messages.stream(model=STAND_IN, max_tokens=24, messages=QUESTION, **GREEDY) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == final.content[0].text == whole.content[0].text
    assert (final.stop_reason, final.usage.output_tokens) == (whole.stop_reason, whole.usage.output_tokens)


def test_a_tool_loop(sdk):
    asked = [{"role": "user", "content": "What is the weather in Paris?"}]
    called = sdk.messages.create(
        model=STAND_IN, max_tokens=60, messages=asked, tools=[WEATHER], tool_choice={"type": "any"}, **GREEDY
    )
    (use,) = [block for block in called.content if block.type == "tool_use"]
    assert called.stop_reason == "tool_use" and use.name == "get_weather" and isinstance(use.input["city"], str)
    with sdk.messages.stream(
        model=STAND_IN, max_tokens=60, messages=asked, tools=[WEATHER], tool_choice={"type": "any"}, **GREEDY
    ) as stream:
        streamed = stream.get_final_message()
    (streamed_use,) = [block for block in streamed.content if block.type == "tool_use"]
    assert streamed_use.input == use.input
    answered = sdk.messages.create(
        model=STAND_IN,
        max_tokens=24,
        tools=[WEATHER],
        tool_choice={"type": "none"},
        messages=[
            *asked,
            {"role": "assistant", "content": [block.model_dump() for block in called.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 22 C"}]},
        ],
    )
    assert answered.content[0].type == "text" and answered.content[0].text.strip()
    assert answered.stop_reason in ("end_turn", "max_tokens")


def test_errors_raise_the_sdks_exceptions(sdk):
    with pytest.raises(anthropic.BadRequestError, match="temperature"):
        sdk.messages.create(model=STAND_IN, max_tokens=8, messages=QUESTION, extra_body={"temperature": 1.5})
    with pytest.raises(anthropic.NotFoundError, match="No such model"):
        sdk.messages.create(model="@cf/nobody/nothing", max_tokens=8, messages=QUESTION)
    with pytest.raises(anthropic.BadRequestError, match="context window"):
        sdk.messages.create(model=STAND_IN, max_tokens=7968, messages=QUESTION)
    with anthropic.Anthropic(base_url=str(sdk.base_url), api_key="wrong", max_retries=0) as anonymous:
        with pytest.raises(anthropic.AuthenticationError):
            anonymous.messages.create(model=STAND_IN, max_tokens=8, messages=QUESTION)
