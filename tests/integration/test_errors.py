"""Every row of the error table, in the Workers AI envelope, and no input that yields a 500 or a hang."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.integration.session import API_KEYS, BODY_LIMIT, chat_prompt_tokens
from tests.support.envelopes import workers_ai_error
from tests.support.repo import STAND_IN

BAD = "AiError: Bad input: Error: "


@pytest.mark.parametrize(
    "body, message",
    [
        (
            {},
            "oneOf at '/' not met, 0 matches: required properties at '/' are 'prompt', "
            "required properties at '/' are 'messages'",
        ),
        ({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, "oneOf at '/' not met, 2 matches"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
            "oneOf at '/' not met, 0 matches: required properties at '/' are 'prompt', "
            "Type mismatch of '/messages/0/content', 'array' not in 'string'",
        ),
        (
            {"messages": [{"role": "user"}]},
            "oneOf at '/' not met, 0 matches: required properties at '/' are 'prompt', "
            "required properties at '/messages/0' are 'content'",
        ),
        (
            {"prompt": ""},
            "oneOf at '/' not met, 0 matches: Length of '/prompt' must be >= 1 not met, "
            "required properties at '/' are 'messages'",
        ),
        (
            {"prompt": 5},
            "oneOf at '/' not met, 0 matches: Type mismatch of '/prompt', 'number' not in 'string', "
            "required properties at '/' are 'messages'",
        ),
        (
            {"prompt": "x", "response_format": {"type": "xml"}},
            "oneOf at '/' not met, 0 matches: enum xml not in json_object,json_schema at '/response_format/type', "
            "required properties at '/' are 'messages'",
        ),
        ([1, 2], "Type mismatch of '/', 'array' not in 'object'"),
    ],
)
def test_validation_messages(client, server, body, message):
    response = client.post(server.run_url(), json=body)
    assert workers_ai_error(response, 400, 5006) == BAD + message


@pytest.mark.parametrize(
    "field, value, rule",
    [
        ("temperature", 5.01, "'/temperature' must be <= 5"),
        ("temperature", -0.1, "'/temperature' must be >= 0"),
        ("top_p", 0, "'/top_p' must be >= 0.001"),
        ("top_p", 1.5, "'/top_p' must be <= 1"),
        ("top_k", 0, "'/top_k' must be >= 1"),
        ("top_k", 51, "'/top_k' must be <= 50"),
        ("top_k", 2.5, "Type mismatch of '/top_k', 'number' not in 'integer'"),
        ("seed", 0, "'/seed' must be >= 1"),
        ("seed", 10000000000, "'/seed' must be <= 9999999999"),
        ("repetition_penalty", 2.5, "'/repetition_penalty' must be <= 2"),
        ("frequency_penalty", -3, "'/frequency_penalty' must be >= -2"),
        ("presence_penalty", 3, "'/presence_penalty' must be <= 2"),
        ("max_tokens", 0, "'/max_tokens' must be >= 1"),
        ("stream", "yes", "Type mismatch of '/stream', 'string' not in 'boolean'"),
        ("raw", 1, "Type mismatch of '/raw', 'number' not in 'boolean'"),
        ("lora", 3, "Type mismatch of '/lora', 'number' not in 'string'"),
    ],
)
def test_each_range_and_type(client, server, field, value, rule):
    response = client.post(server.run_url(), json={"prompt": "hello", field: value})
    message = workers_ai_error(response, 400, 5006)
    assert message == f"{BAD}oneOf at '/' not met, 0 matches: {rule}, required properties at '/' are 'messages'"


def test_invalid_json_is_bad_input(client, server):
    for raw in (
        b"{not json",
        b"",
        b'{"prompt": "x", "temperature": NaN}',
        b'{"prompt": "x", "seed": 1e999}',
        b"\xff\xfe",
        b"[" * 100_000,
    ):
        message = workers_ai_error(client.post(server.run_url(), content=raw), 400, 5006)
        assert message.startswith(BAD + "the body is not valid JSON")


def test_unknown_model(client, server):
    response = client.post(server.run_url("@cf/meta/llama-9-400b"), json={"prompt": "x"})
    assert workers_ai_error(response, 400, 5007) == "No such model @cf/meta/llama-9-400b or task"


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/client/v4/accounts/a/ai/run/@cf/meta/llama-3-8b-instruct"),
        ("POST", "/client/v4/accounts/a/ai/walk/@cf/meta/llama-3-8b-instruct"),
        ("GET", "/client/v4/nothing/here"),
        ("DELETE", "/client/v4/accounts/a/ai/run/x"),
    ],
)
def test_no_route(client, method, path):
    assert workers_ai_error(client.request(method, path), 400, 7000) == "No route for that URI"


def test_context_window(client, server, tokenizer):
    prompt = "hello " * 4000
    response = client.post(server.run_url(), json={"prompt": prompt, "max_tokens": 4000})
    requested = chat_prompt_tokens(tokenizer, [{"role": "user", "content": prompt}]) + 4000
    assert workers_ai_error(response, 413, 5021) == (
        f"AiError: The estimated number of input and maximum output tokens ({requested}) "
        "exceeded this model context window limit (7968)"
    )


def test_context_window_counts_the_default_max_tokens(client, server, tokenizer):
    # This prompt fits the window alone, but not with the default 256 output tokens.
    prompt = "hi " * 7750
    prompt_tokens = len(tokenizer.encode(prompt))
    assert prompt_tokens + 1 <= 7968 < prompt_tokens + 256
    message = workers_ai_error(client.post(server.run_url(), json={"prompt": prompt, "raw": True}), 413, 5021)
    assert f"({prompt_tokens + 256})" in message


def test_body_over_the_limit(client, server):
    big = json.dumps({"prompt": "x" * (BODY_LIMIT + 10)})
    assert workers_ai_error(client.post(server.run_url(), content=big), 413, 3006) == "Request is too large"


def test_chunked_body_over_the_limit(client, server):
    def chunks():
        yield b'{"prompt": "'
        for _ in range(BODY_LIMIT // 65536 + 2):
            yield b"x" * 65536
        yield b'"}'

    workers_ai_error(client.post(server.run_url(), content=chunks()), 413, 3006)


def test_an_unknown_lora_adapter(client, server):
    # LoRA is on for the default model; 405 / 5005 for a model with LoRA off: test_lora_off.py.
    response = client.post(server.run_url(), json={"prompt": "x", "lora": "my-adapter"})
    assert workers_ai_error(response, 400, 3041) == f"AiError: No such fine-tune my-adapter for model {STAND_IN}"


# Auth -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic x"},
        {"Authorization": "Bearer"},
        {"Authorization": API_KEYS[0]},
    ],
)
def test_missing_or_wrong_key(server, headers):
    response = httpx.post(server.run_url(), json={"prompt": "x"}, headers=headers)
    assert workers_ai_error(response, 401, 10000) == "Authentication error"


def test_every_configured_key_works(server):
    for key in API_KEYS:
        response = httpx.post(
            server.run_url(),
            json={"prompt": "x", "max_tokens": 1},
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        )
        assert response.status_code == 200


# Nothing a client sends yields a 500 or a hang -------------------------------------------------

# Bodies the server may accept ask for a few tokens: the oddity is in the input, and a default-length
# answer (256 tokens, about 15 s here) would only make the test slower.
ODD_BODIES = [
    {"prompt": "\ud800 lone surrogate"},
    {"prompt": "\x00\x01\x02", "max_tokens": 8},
    {"prompt": " ", "max_tokens": 8},
    {"messages": []},
    {"messages": [{"role": "", "content": ""}], "max_tokens": 8},
    {"messages": [{"role": "user", "content": "hi", "name": {"x": 1}}], "extra": [1, {"a": None}]},
    {"prompt": "x", "response_format": {"type": "json_schema", "json_schema": {"type": "nonsense"}}},
    {"prompt": "x", "response_format": {"type": "json_schema", "json_schema": {"$ref": "#/nowhere"}}},
    {"prompt": "x", "response_format": {"type": "json_schema"}, "max_tokens": 20},
    {"prompt": "x", "response_format": {"type": "json_schema", "json_schema": [1]}},
    {"prompt": "x", "response_format": None},
    {"prompt": "x", "max_tokens": 10**30},
    {"prompt": "x", "seed": 9999999999.0, "max_tokens": 2},
    {"prompt": "x", "tools": [{"name": "f"}]},
    {
        "messages": [{"role": "user", "content": "x"}],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "c"}}},
                },
            }
        ],
        "max_tokens": 5,
    },
    {"messages": [{"role": "tool", "content": "42"}, {"role": "assistant", "content": "ok"}], "max_tokens": 3},
    "a string",
    42,
    None,
    True,
]


@pytest.mark.parametrize("body", ODD_BODIES, ids=range(len(ODD_BODIES)))
@pytest.mark.parametrize("stream", [False, True])
def test_odd_input_never_yields_a_500(client, server, body, stream):
    if stream and isinstance(body, dict):
        body = {**body, "stream": True}
    response = client.post(server.run_url(), content=json.dumps(body), timeout=60)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.json()["errors"][0]["code"] in (5006, 5021, 3030, 3031)  # 3031: a tool call cut short
    elif stream:
        assert response.text.endswith("data: [DONE]\n\n")
