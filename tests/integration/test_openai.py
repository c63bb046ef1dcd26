"""The OpenAI chat endpoint on the real engine, over raw HTTP: shapes, sampling, streaming, errors."""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest

from tests.support.envelopes import openai_body, openai_error
from tests.support.repo import REAL_MODEL, STAND_IN
from tests.support.sse import events, json_events

EMBEDDING_MODEL = "@cf/sentence-transformers/all-minilm-l6-v2"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
PATHS = ["/v1/chat/completions", "/client/v4/accounts/test-account/ai/v1/chat/completions"]


def chat(client, body, path=PATHS[0]):
    return client.post(path, json={"model": STAND_IN, "messages": QUESTION, **body})


@pytest.mark.parametrize("path", PATHS)
def test_chat_completion_shape_on_both_paths(client, path):
    response = chat(client, {"max_tokens": 12, "seed": 1}, path)
    body = openai_body(response)
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == STAND_IN and isinstance(body["created"], int)
    [choice] = body["choices"]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].strip()
    assert choice["finish_reason"] in {"stop", "length"} and choice["logprobs"] is None
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert response.headers["x-wai-stand-in"] == REAL_MODEL


def test_same_engine_and_usage_as_the_native_endpoint(client, server):
    sampling = {"seed": 42, "temperature": 0.9, "max_tokens": 30}
    native = client.post(server.run_url(), json={"messages": QUESTION, **sampling}).json()["result"]
    body = openai_body(chat(client, sampling))
    assert body["choices"][0]["message"]["content"] == native["response"]
    usage = body["usage"]
    counts = ("prompt_tokens", "completion_tokens", "total_tokens")
    assert {k: usage[k] for k in counts} == {k: native["usage"][k] for k in counts}


def test_finish_reason_length_and_stop(client):
    cut = openai_body(
        chat(
            client,
            {
                "messages": [{"role": "user", "content": "Write a long story."}],
                "max_tokens": 3,
                "temperature": 0,
            },
        )
    )
    assert cut["choices"][0]["finish_reason"] == "length" and cut["usage"]["completion_tokens"] == 3
    done = openai_body(
        chat(
            client,
            {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 200, "temperature": 0},
        )
    )
    assert done["choices"][0]["finish_reason"] == "stop" and done["usage"]["completion_tokens"] < 200


def test_content_forms_system_assistant_and_tool_roles(client):
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "You are terse."}]},
        {"role": "user", "content": [{"type": "text", "text": "What is 6 times 7?"}]},
        {"role": "assistant", "content": None},
        {"role": "tool", "content": "42", "tool_call_id": "call_1"},
        {"role": "user", "content": "So?"},
    ]
    body = openai_body(chat(client, {"messages": messages, "max_tokens": 8}))
    assert body["usage"]["prompt_tokens"] > 20


def test_content_parts_read_as_their_text(client):
    as_string = openai_body(
        chat(
            client,
            {"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 10, "temperature": 0},
        )
    )
    as_parts = openai_body(
        chat(
            client,
            {
                "messages": [{"role": "user", "content": [{"type": "text", "text": "Name a colour."}]}],
                "max_tokens": 10,
                "temperature": 0,
            },
        )
    )
    assert as_parts["choices"][0]["message"] == as_string["choices"][0]["message"]
    assert as_parts["usage"] == as_string["usage"]


def test_n_choices_and_stop_sequences(client):
    body = openai_body(chat(client, {"n": 3, "temperature": 1.0, "seed": 8, "max_tokens": 16}))
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert len({c["message"]["content"] for c in body["choices"]}) > 1
    stopped = openai_body(
        chat(
            client,
            {
                "messages": [{"role": "user", "content": "Count from 1 to 10, comma separated."}],
                "temperature": 0,
                "max_tokens": 40,
            },
        )
    )
    text = stopped["choices"][0]["message"]["content"]
    stop_at = next(word for word in ("3", "4", "5") if word in text)
    cut = openai_body(
        chat(
            client,
            {
                "messages": [{"role": "user", "content": "Count from 1 to 10, comma separated."}],
                "temperature": 0,
                "max_tokens": 40,
                "stop": [stop_at],
            },
        )
    )
    assert cut["choices"][0]["message"]["content"] == text[: text.index(stop_at)]
    assert cut["choices"][0]["finish_reason"] == "stop"


def test_several_greedy_choices_are_the_same_text(client):
    single = openai_body(chat(client, {"temperature": 0, "max_tokens": 12}))
    body = openai_body(chat(client, {"temperature": 0, "max_tokens": 12, "n": 3}))
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert {c["message"]["content"] for c in body["choices"]} == {single["choices"][0]["message"]["content"]}
    assert body["usage"]["completion_tokens"] == 3 * single["usage"]["completion_tokens"]
    chunks = stream(client, {"temperature": 0, "max_tokens": 12, "n": 2, "stream_options": {"include_usage": True}})
    for index in (0, 1):
        text = "".join(
            c["choices"][0]["delta"].get("content", "")
            for c in chunks
            if c["choices"] and c["choices"][0]["index"] == index
        )
        assert text == single["choices"][0]["message"]["content"]


def test_logprobs_and_top_logprobs(client):
    body = openai_body(chat(client, {"max_tokens": 5, "logprobs": True, "top_logprobs": 3, "temperature": 0}))
    choice = body["choices"][0]
    content = choice["logprobs"]["content"]
    assert len(content) == body["usage"]["completion_tokens"]
    assert "".join(token["token"] for token in content) == choice["message"]["content"]
    for token in content:
        assert token["logprob"] <= 0 and bytes(token["bytes"]).decode() == token["token"]
        assert len(token["top_logprobs"]) == 3
        # greedy: the chosen token is the most likely one
        assert token["top_logprobs"][0]["token"] == token["token"]
        logprobs = [top["logprob"] for top in token["top_logprobs"]]
        assert logprobs == sorted(logprobs, reverse=True)
    only_chosen = openai_body(chat(client, {"max_tokens": 3, "logprobs": True}))
    assert all(token["top_logprobs"] == [] for token in only_chosen["choices"][0]["logprobs"]["content"])


PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def test_json_schema_response_format(client):
    body = openai_body(
        chat(
            client,
            {
                "messages": [{"role": "user", "content": "Invent a person; answer in JSON."}],
                "max_tokens": 100,
                "seed": 2,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "person", "schema": PERSON, "strict": True},
                },
            },
        )
    )
    jsonschema.validate(json.loads(body["choices"][0]["message"]["content"]), PERSON)


def test_json_object_response_format(client):
    body = openai_body(
        chat(
            client,
            {
                "max_tokens": 120,
                "seed": 4,
                "response_format": {"type": "json_object"},
                "messages": [{"role": "user", "content": "Describe Paris as JSON."}],
            },
        )
    )
    assert isinstance(json.loads(body["choices"][0]["message"]["content"]), dict)


# Streaming ------------------------------------------------------------------------------------


def stream(client, body, path=PATHS[0]):
    with client.stream("POST", path, json={"model": STAND_IN, "messages": QUESTION, "stream": True, **body}) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        return json_events(events(r))


@pytest.mark.parametrize("path", PATHS)
def test_stream_chunks_with_usage(client, path):
    chunks = stream(client, {"max_tokens": 16, "seed": 9, "stream_options": {"include_usage": True}}, path)
    *content, last = chunks
    assert all(c["object"] == "chat.completion.chunk" and c["usage"] is None for c in content)
    assert len({c["id"] for c in chunks}) == 1
    assert content[0]["choices"][0]["delta"]["role"] == "assistant"
    assert content[-1]["choices"][0]["finish_reason"] in {"stop", "length"}
    assert all(c["choices"][0]["finish_reason"] is None for c in content[:-1])
    assert last["choices"] == [] and last["usage"]["completion_tokens"] >= 1


def test_stream_without_include_usage_has_no_usage(client):
    chunks = stream(client, {"max_tokens": 4})
    assert all("usage" not in c for c in chunks) and chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_streamed_text_joins_to_the_sync_text(client):
    body = {"seed": 77, "temperature": 1.0, "max_tokens": 40}
    sync = openai_body(chat(client, body))
    chunks = stream(client, {**body, "stream_options": {"include_usage": True}})
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == sync["choices"][0]["message"]["content"]
    assert chunks[-1]["usage"] == sync["usage"]
    assert chunks[-2]["choices"][0]["finish_reason"] == sync["choices"][0]["finish_reason"]


def test_stream_of_several_choices_with_logprobs(client):
    chunks = stream(
        client,
        {
            "n": 2,
            "temperature": 1.0,
            "max_tokens": 6,
            "logprobs": True,
            "top_logprobs": 1,
            "stream_options": {"include_usage": True},
        },
    )
    finished = [c["choices"][0]["index"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert sorted(finished) == [0, 1]
    tokens = sum(len(c["choices"][0]["logprobs"]["content"]) for c in chunks if c["choices"])
    assert tokens == chunks[-1]["usage"]["completion_tokens"] <= 12


def test_client_disconnect_aborts_the_engine_request(server):
    body = {
        "model": STAND_IN,
        "stream": True,
        "max_tokens": 4000,
        "temperature": 2,
        "seed": 3,
        "messages": [{"role": "user", "content": "Write a very long story."}],
    }
    with server.client() as client, client.stream("POST", PATHS[0], json=body) as response:
        assert response.status_code == 200
        next(response.iter_lines())
        assert server.metric("vllm:num_requests_running") >= 1
    assert server.engine_running() == 0


@pytest.mark.parametrize(
    "edge",
    [
        {"temperature": 0},
        {"temperature": 2},
        {"top_p": 0},
        {"top_p": 1},
        {"seed": -(2**63)},
        {"seed": 2**63 - 1},
        {"presence_penalty": -2},
        {"frequency_penalty": 2},
        {"n": 1},
        {"logprobs": True, "top_logprobs": 0},
        {"logprobs": True, "top_logprobs": 20},
        {"max_completion_tokens": 1},
    ],
)
def test_every_legal_edge_value_reaches_the_engine(client, edge):
    body = openai_body(chat(client, {"max_tokens": 3, **edge}))
    assert body["usage"]["completion_tokens"] >= 1


def test_top_p_zero_keeps_only_the_most_likely_token(client):
    body = {"temperature": 2, "seed": 5, "max_tokens": 20}
    greedy = openai_body(chat(client, {**body, "temperature": 0}))["choices"][0]["message"]["content"]
    assert openai_body(chat(client, {**body, "top_p": 0}))["choices"][0]["message"]["content"] == greedy


# Errors: the same rules as the native endpoint, in OpenAI's shape ------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("temperature", 2.5),
        ("top_p", 1.5),
        ("presence_penalty", -3),
        ("frequency_penalty", 3),
        ("n", 0),
        ("max_tokens", 0),
        ("seed", "1"),
    ],
)
def test_out_of_range_is_400_naming_the_param(client, field, value):
    error = openai_error(chat(client, {field: value}), 400)
    assert error["param"] == field and field in error["message"] and error["type"] == "invalid_request_error"


def test_top_logprobs_range(client):
    error = openai_error(chat(client, {"logprobs": True, "top_logprobs": 21}), 400)
    assert error["param"] == "top_logprobs"


def test_context_window_is_openais_context_length_exceeded(client):
    error = openai_error(chat(client, {"max_tokens": 7960}), 400)
    assert (error["code"], error["type"], error["param"]) == (
        "context_length_exceeded",
        "invalid_request_error",
        "messages",
    )
    assert error["message"].startswith("This model's maximum context length is 7968 tokens. However, you requested ")
    error = openai_error(chat(client, {"max_completion_tokens": 7960}), 400)
    assert error["code"] == "context_length_exceeded"


def test_missing_and_wrongly_typed_fields_have_openais_codes(client):
    error = openai_error(client.post(PATHS[1], json={"model": STAND_IN}), 400)
    assert (error["code"], error["param"]) == ("missing_required_parameter", "messages")
    error = openai_error(chat(client, {"max_tokens": "16"}), 400)
    assert (error["code"], error["param"]) == ("invalid_type", "max_tokens")


def test_unknown_model_and_wrong_task(client):
    for model in ("@cf/nobody/nothing", EMBEDDING_MODEL):
        error = openai_error(client.post(PATHS[1], json={"model": model, "messages": QUESTION}), 404)
        assert error["message"] == f"No such model {model} or task" and error["param"] == "model"
        assert (error["code"], error["type"]) == ("model_not_found", "invalid_request_error")


def test_auth_is_required(server):
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = httpx.post(
            server.base_url + PATHS[1], json={"model": STAND_IN, "messages": QUESTION}, headers=headers
        )
        error = openai_error(response, 401)
        assert (error["code"], error["type"]) == ("invalid_api_key", "invalid_request_error")


def test_not_json_is_400(client):
    error = openai_error(client.post(PATHS[0], content=b"{nope"), 400)
    assert "not valid JSON" in error["message"]
