"""The run endpoint on the real engine: both input forms, sampling, JSON mode, usage, headers."""

from __future__ import annotations

import json
import uuid

import jsonschema
import pytest

from tests.integration.session import chat_prompt_tokens
from tests.support.envelopes import result
from tests.support.repo import REAL_MODEL, STAND_IN
from tests.support.sse import events, json_events

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def run(client, server, body, model=STAND_IN, **kwargs):
    return client.post(server.run_url(model), json=body, **kwargs)


def test_messages_form_answers_in_the_envelope(client, server):
    response = run(client, server, {"messages": QUESTION, "seed": 7})
    answer = result(response)
    assert isinstance(answer["response"], str) and answer["response"].strip()
    assert answer["tool_calls"] == []
    uuid.UUID(response.headers["cf-ai-req-id"])


def test_prompt_form_answers(client, server):
    answer = result(run(client, server, {"prompt": "What is the capital of France?", "max_tokens": 20}))
    assert answer["response"].strip()


def test_stand_in_header_only_through_the_alias(client, server):
    through_alias = run(client, server, {"prompt": "Hi", "max_tokens": 2})
    assert through_alias.headers["x-wai-stand-in"] == REAL_MODEL
    direct = run(client, server, {"prompt": "Hi", "max_tokens": 2}, model=REAL_MODEL)
    assert direct.status_code == 200 and "x-wai-stand-in" not in direct.headers


def test_startup_log_names_the_stand_in(server):
    assert f"{REAL_MODEL} stands in for {STAND_IN}" in server.log()


def test_usage_counts_the_templated_prompt_and_every_generated_token(client, server, tokenizer):
    answer = result(run(client, server, {"messages": QUESTION, "max_tokens": 12, "temperature": 5, "seed": 3}))
    usage = answer["usage"]
    assert usage["prompt_tokens"] == chat_prompt_tokens(tokenizer, QUESTION)
    assert 1 <= usage["completion_tokens"] <= 12
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_max_tokens_limits_the_answer(client, server):
    # temperature 5 over a raw prompt almost never picks end-of-sequence: the limit is what stops it.
    answer = result(
        run(client, server, {"prompt": "Once upon a time", "raw": True, "temperature": 5, "seed": 11, "max_tokens": 7})
    )
    assert answer["usage"]["completion_tokens"] == 7


def test_raw_skips_the_chat_template(client, server, tokenizer):
    prompt = "The capital of France is"
    raw = result(run(client, server, {"prompt": prompt, "raw": True, "max_tokens": 3}))
    templated = result(run(client, server, {"prompt": prompt, "max_tokens": 3}))
    assert raw["usage"]["prompt_tokens"] == len(tokenizer.encode(prompt))
    assert templated["usage"]["prompt_tokens"] > raw["usage"]["prompt_tokens"] + 5


def test_same_seed_and_input_give_the_same_text(client, server):
    body = {"messages": QUESTION, "seed": 1234, "temperature": 1.2, "max_tokens": 40}
    first, second = (result(run(client, server, body))["response"] for _ in range(2))
    assert first == second
    other = result(run(client, server, {**body, "seed": 4321}))["response"]
    assert other != first


def test_temperature_zero_is_greedy(client, server):
    body = {"messages": QUESTION, "temperature": 0, "max_tokens": 20}
    assert result(run(client, server, body))["response"] == result(run(client, server, body))["response"]


@pytest.mark.parametrize(
    "edge",
    [
        {"temperature": 0},
        {"temperature": 5},
        {"top_p": 0.001},
        {"top_p": 1},
        {"top_k": 1},
        {"top_k": 50},
        {"seed": 1},
        {"seed": 9999999999},
        {"repetition_penalty": 0},
        {"repetition_penalty": 2},
        {"frequency_penalty": -2},
        {"frequency_penalty": 2},
        {"presence_penalty": -2},
        {"presence_penalty": 2},
        {"max_tokens": 1},
        {"max_tokens": 3.0},
    ],
)
def test_every_legal_edge_value_reaches_the_engine(client, server, edge):
    answer = result(run(client, server, {"prompt": "Hello", "max_tokens": 3, **edge}))
    assert answer["usage"]["completion_tokens"] >= 1


def test_temperature_above_the_engine_ceiling_samples_at_the_ceiling(client, server):
    body = {"prompt": "Tell me a story.", "seed": 21, "max_tokens": 24}
    at_five = result(run(client, server, {**body, "temperature": 5}))["response"]
    assert at_five == result(run(client, server, {**body, "temperature": 2}))["response"]


def test_sampling_fields_change_the_output(client, server):
    base = {"prompt": "Write a word.", "seed": 5, "temperature": 1.5, "max_tokens": 24}
    plain = result(run(client, server, base))["response"]
    top_k_one = result(run(client, server, {**base, "top_k": 1}))["response"]
    greedy = result(run(client, server, {**base, "temperature": 0}))["response"]
    assert top_k_one == greedy  # top_k 1 is greedy whatever the temperature
    assert plain != greedy


def test_body_is_json_whatever_the_content_type(client, server):
    body = json.dumps({"prompt": "Hello", "max_tokens": 2})
    for content_type in (None, "text/plain", "application/x-www-form-urlencoded"):
        headers = {"content-type": content_type} if content_type else {}
        response = client.post(server.run_url(), content=body, headers=headers)
        assert result(response)["usage"]["completion_tokens"] >= 1


PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


def test_json_schema_mode_returns_an_object_that_satisfies_the_schema(client, server):
    answer = result(
        run(
            client,
            server,
            {
                "messages": [{"role": "user", "content": "Invent a person; answer in JSON."}],
                "response_format": {"type": "json_schema", "json_schema": PERSON},
                "max_tokens": 100,
                "seed": 2,
            },
        )
    )
    assert isinstance(answer["response"], dict)
    jsonschema.validate(answer["response"], PERSON)


def test_json_object_mode_returns_an_object(client, server):
    answer = result(
        run(
            client,
            server,
            {
                "prompt": "Describe Paris as JSON.",
                "response_format": {"type": "json_object"},
                "max_tokens": 150,
                "seed": 4,
            },
        )
    )
    assert isinstance(answer["response"], dict)


def test_json_mode_that_runs_out_of_tokens_is_a_clear_error(client, server):
    response = run(
        client,
        server,
        {
            "prompt": "Describe Paris.",
            "response_format": {"type": "json_schema", "json_schema": PERSON},
            "max_tokens": 3,
        },
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["message"] == "AiError: JSON Mode couldn't be met"


# Streaming ------------------------------------------------------------------------------------


def stream(client, server, body):
    with client.stream("POST", server.run_url(), json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        uuid.UUID(response.headers["cf-ai-req-id"])
        return events(response)


def test_stream_has_the_hosted_event_sequence(client, server):
    payloads = stream(client, server, {"messages": QUESTION, "max_tokens": 16, "seed": 9})
    parsed = json_events(payloads)
    *tokens, empty, usage = parsed
    assert tokens, payloads
    for event in tokens:
        assert set(event) == {"response", "p"} and event["response"]
        assert event["p"] and event["p"].isalnum()
    assert empty == {"response": ""}
    assert set(usage) == {"response", "usage"} and usage["response"] == ""
    assert usage["usage"]["completion_tokens"] == 16 or usage["usage"]["completion_tokens"] >= len(tokens)
    assert usage["usage"]["total_tokens"] == usage["usage"]["prompt_tokens"] + usage["usage"]["completion_tokens"]


def test_padding_lengths_vary(client, server):
    tokens = json_events(stream(client, server, {"prompt": "Count to twenty.", "max_tokens": 30}))[:-2]
    assert len({len(event["p"]) for event in tokens}) > 1


def test_streamed_text_joins_to_the_sync_text(client, server):
    body = {"messages": QUESTION, "seed": 77, "temperature": 1.0, "max_tokens": 48}
    sync = result(run(client, server, body))
    parsed = json_events(stream(client, server, body))
    assert "".join(event["response"] for event in parsed[:-2]) == sync["response"]
    assert parsed[-1]["usage"] == sync["usage"]


def test_json_mode_streams(client, server):
    parsed = json_events(
        stream(
            client,
            server,
            {
                "prompt": "Invent a person.",
                "response_format": {"type": "json_schema", "json_schema": PERSON},
                "max_tokens": 100,
                "seed": 2,
            },
        )
    )
    jsonschema.validate(json.loads("".join(event["response"] for event in parsed[:-2])), PERSON)


# The prefix cache -----------------------------------------------------------------------------

# Many times the engine's KV block (128 tokens on the CPU backend, 16 on a GPU): vLLM caches whole blocks.
LONG_TEXT = " ".join(f"Lighthouse {n} stands on rock {n * 7} and is painted in {n % 5 + 2} stripes." for n in range(30))


def test_a_repeated_prompt_reports_the_cached_tokens_on_the_run_endpoint_and_chat(client, server):
    # A fresh start, so the first answer's hits can only be the chat template's common beginning.
    ask = [{"role": "user", "content": f"{uuid.uuid4()} {LONG_TEXT} Which has the most stripes?"}]
    body = {"messages": ask, "max_tokens": 2}
    first = result(run(client, server, body))["usage"]
    assert first["prompt_tokens"] > 3 * 128
    again = result(run(client, server, body))["usage"]
    assert first["prompt_tokens_details"]["cached_tokens"] < again["prompt_tokens_details"]["cached_tokens"]
    assert again["prompt_tokens_details"]["cached_tokens"] < again["prompt_tokens"]
    streamed = json_events(stream(client, server, body))[-1]["usage"]
    assert streamed["prompt_tokens_details"] == again["prompt_tokens_details"]
    chat = client.post("/v1/chat/completions", json={"model": STAND_IN, **body})
    assert chat.status_code == 200, chat.text
    assert chat.json()["usage"]["prompt_tokens_details"] == again["prompt_tokens_details"]
