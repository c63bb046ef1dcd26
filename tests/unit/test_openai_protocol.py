"""OpenAI request validation and chunk encoding: pure logic, no engine."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from dataclasses import replace

import pytest

from server import errors
from server.config import ModelConfig, Weights
from server.engine.types import TextDelta
from server.protocol import openai, openai_answers
from server.protocol.sampling import OPENAI_SAMPLING_FIELDS
from server.serving.requests import OutputFormat
from server.serving.sampling import engine_choices, generation_params
from server.streaming import openai_events

USER = [{"role": "user", "content": "Hi"}]
MODEL = ModelConfig(name="m", weights=Weights(path="/nowhere"))


def chat(**fields):
    return openai.parse(openai.ChatCompletionRequest, {"model": "m", "messages": USER, **fields})


def rejected(request_type=openai.ChatCompletionRequest, **fields) -> errors.WaiError:
    body = {"model": "m", "messages": USER, **fields} if request_type is openai.ChatCompletionRequest else fields
    with pytest.raises(errors.WaiError) as caught:
        openai.parse(request_type, body)
    assert caught.value.status == 400 and caught.value.code == 5006
    return caught.value


@pytest.mark.parametrize(
    "name",
    ["temperature", "top_p", "frequency_penalty", "presence_penalty", "n", "top_logprobs", "seed", "top_k"],
)
def test_ranges_come_from_the_sampling_table(name):
    spec = OPENAI_SAMPLING_FIELDS[name]
    extra = {"logprobs": True} if name == "top_logprobs" else {}
    for edge in (spec["minimum"], spec["maximum"]):
        chat(**{name: edge, **extra})
    below = spec["minimum"] - (1 if spec["type"] == "integer" else 0.0001)
    error = rejected(**{name: below, **extra})
    assert error.param == name and name in error.message


def test_openai_ranges_differ_from_the_hosted_ones_only_where_openai_documents_so():
    assert OPENAI_SAMPLING_FIELDS["temperature"]["maximum"] == 2
    assert OPENAI_SAMPLING_FIELDS["top_p"]["minimum"] == 0
    assert OPENAI_SAMPLING_FIELDS["top_logprobs"]["maximum"] == 20
    assert rejected(temperature=2.5).param == "temperature"


def test_content_forms_become_plain_strings():
    request = openai.text_request(
        chat(
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                },
                {"role": "tool", "content": "42", "tool_call_id": "1"},
            ]
        )
    )
    assert [m.content for m in request.messages] == ["Be brief.", "a\nb", "", "42"]
    assert [(c.id, c.name, c.arguments) for c in request.messages[2].tool_calls] == [("1", "f", {})]
    assert request.messages[3].tool_call_id == "1"


@pytest.mark.parametrize(
    "body, param",
    [
        ({"messages": []}, "messages"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages.0.content",
        ),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({"stop": 5}, "stop"),
        ({"temperature": "0.5"}, "temperature"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
            "response_format.json_schema.name",
        ),
        ({"model": None}, "model"),
    ],
)
def test_bad_requests_name_the_parameter(body, param):
    assert rejected(**body).param == param


def test_both_protocols_share_one_sampling_mapping():
    request = openai.text_request(
        chat(
            max_completion_tokens=9,
            max_tokens=50,
            temperature=0.3,
            stop=["\n"],
            n=2,
            logprobs=True,
            top_logprobs=3,
            seed=-5,
        )
    )
    params = generation_params(request.sampling, request.output, MODEL)
    assert (params.max_tokens, params.n) == (9, 2)
    assert params.sampling == {"temperature": 0.3, "stop": ["\n"], "logprobs": 3, "seed": -5}
    assert openai.text_request(chat(logprobs=True)).top_logprobs == 0
    assert openai.text_request(chat()).top_logprobs is None


def test_greedy_choices_run_once_and_are_repeated():
    greedy = generation_params(openai.text_request(chat(n=3, temperature=0)).sampling, OutputFormat(), MODEL)
    assert engine_choices(greedy) == (replace(greedy, n=1), 3)
    sampled = generation_params(openai.text_request(chat(n=3, temperature=0.5)).sampling, OutputFormat(), MODEL)
    assert engine_choices(sampled) == (sampled, 1)


def test_response_format_maps_to_the_output_format():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    spec = {"type": "json_schema", "json_schema": {"name": "thing", "schema": schema, "strict": True}}
    assert openai.text_request(chat(response_format=spec)).output.schema == schema
    assert openai.text_request(chat(response_format={"type": "json_object"})).output.type == "json_object"
    assert openai.text_request(chat(response_format={"type": "text"})).output.type == "text"


def test_embeddings_input_forms():
    single = openai.parse(openai.EmbeddingsRequest, {"model": "m", "input": "x"})
    assert openai.embedding_request(single).texts == ("x",)
    assert rejected(openai.EmbeddingsRequest, model="m", input=[]).param == "input"
    assert rejected(openai.EmbeddingsRequest, model="m", input=["a", ""]).param == "input"
    assert rejected(openai.EmbeddingsRequest, model="m", input="x", encoding_format="int8").param == "encoding_format"


def test_base64_is_little_endian_float32():
    body = openai_answers.embedding_list([[1.0, -0.5]], "base64", "m", 3)
    assert struct.unpack("<2f", base64.b64decode(body["data"][0]["embedding"])) == (1.0, -0.5)


async def _deltas(items):
    for item in items:
        yield item


def encode(deltas, include_usage=True, top_logprobs=None):
    async def collect():
        return [
            part
            async for part in openai_events(
                _deltas(deltas),
                openai_answers.ChatAnswer(
                    id="c", created=1, model="m", include_usage=include_usage, top_logprobs=top_logprobs
                ),
            )
        ]

    raw = b"".join(asyncio.run(collect())).decode()
    payloads = [event.removeprefix("data: ") for event in raw.split("\n\n") if event]
    assert payloads[-1] == "[DONE]"
    return [json.loads(p) for p in payloads[:-1]]


def test_chunks_start_with_the_role_and_end_with_finish_reason_and_usage():
    chunks = encode([TextDelta(0, "Hel", 5, 1), TextDelta(0, "lo", 5, 2, finish_reason="length")])
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hel"}
    assert chunks[1]["choices"][0] == {
        "index": 0,
        "delta": {"content": "lo"},
        "logprobs": None,
        "finish_reason": "length",
    }
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "c" for c in chunks)
    assert chunks[0]["usage"] is None and chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 2 and chunks[-1]["usage"]["total_tokens"] == 7


def test_usage_sums_every_choice_and_is_absent_unless_asked():
    deltas = [
        TextDelta(0, "a", 5, 1),
        TextDelta(1, "b", 5, 1),
        TextDelta(1, "c", 5, 2, finish_reason="stop"),
        TextDelta(0, "", 5, 1, finish_reason="stop"),
    ]
    assert encode(deltas)[-1]["usage"]["completion_tokens"] == 3
    assert all("usage" not in c for c in encode(deltas, include_usage=False))


def test_error_mid_stream_is_an_openai_error_then_done():
    async def failing():
        yield TextDelta(0, "a", 5, 1)
        raise errors.service_unavailable()

    async def collect():
        return [
            part async for part in openai_events(failing(), openai_answers.ChatAnswer(id="c", created=1, model="m"))
        ]

    raw = b"".join(asyncio.run(collect())).decode()
    events = [e.removeprefix("data: ") for e in raw.split("\n\n") if e]
    assert json.loads(events[-2])["error"]["code"] == "3040" and events[-1] == "[DONE]"
