"""Hand-made nasty requests, through HTTP on the fake app, in every protocol they apply to: each gets a
4xx in its protocol's envelope, never a 5xx, never a hang."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import jsonschema
import pytest

from server.protocol import anthropic, openai, responses
from server.protocol.workers_ai import MESSAGES_FORM, PROMPT_FORM, TEXT_GENERATION_INPUT
from tests.support.api_fuzz import RESPONSE_TIME_LIMIT_S
from tests.support.envelopes import assert_error_envelope, protocol_of
from tests.support.fakes import EMBEDDING_MODEL, TEXT_MODEL
from tests.support.fuzz_tally import TALLY

ACCOUNT = "/client/v4/accounts/nasty/ai"
RUN = f"{ACCOUNT}/run/{TEXT_MODEL}"
RUN_EMBEDDINGS = f"{ACCOUNT}/run/{EMBEDDING_MODEL}"
CHAT = "/v1/chat/completions"
ACCOUNT_CHAT = f"{ACCOUNT}/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
FINETUNES = f"{ACCOUNT}/finetunes"
ANTHROPIC_MESSAGES = "/v1/messages"
RESPONSES = "/v1/responses"

MESSAGES = [{"role": "user", "content": "hi"}]
VALID = {
    RUN: {"prompt": "hi"},
    RUN_EMBEDDINGS: {"text": "hi"},
    CHAT: {"model": TEXT_MODEL, "messages": MESSAGES},
    ACCOUNT_CHAT: {"model": TEXT_MODEL, "messages": MESSAGES},
    COMPLETIONS: {"model": TEXT_MODEL, "prompt": "Once upon"},
    EMBEDDINGS: {"model": EMBEDDING_MODEL, "input": "hi"},
    FINETUNES: {"model": TEXT_MODEL, "name": "nasty"},
    ANTHROPIC_MESSAGES: {"model": TEXT_MODEL, "max_tokens": 4, "messages": MESSAGES},
    RESPONSES: {"model": TEXT_MODEL, "input": "hi", "max_output_tokens": 4},
}
JSON_ROUTES = sorted(VALID)
TEXT_ROUTES = [RUN, CHAT, ACCOUNT_CHAT, COMPLETIONS]
OPENAI_TEXT_ROUTES = [CHAT, ACCOUNT_CHAT, COMPLETIONS]


OPENAI_BAD_INPUT_CODES = ("missing_required_parameter", "invalid_type")


def post(client: httpx.Client, path: str, body: bytes) -> httpx.Response:
    """One request on a connection of its own: after an unexpected exception (a 500) the server resets the
    connection, which must not fail the next case."""
    started = time.monotonic()
    headers = {"connection": "close"}
    response = client.post(path, content=body, headers=headers, timeout=RESPONSE_TIME_LIMIT_S)
    assert time.monotonic() - started < RESPONSE_TIME_LIMIT_S
    TALLY.case("nasties", f"POST {path}", response.status_code)
    return response


def refused(response: httpx.Response, path: str, status: int | None = None, code: int | None = None) -> None:
    """A 4xx (this one, when given) in `path`'s protocol envelope, with this error code when given."""
    assert 400 <= response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
    if status is not None:
        assert response.status_code == status, response.text[:500]
    assert_error_envelope(path, response.status_code, response.headers.get("content-type", ""), response.content)
    if code is not None and protocol_of(path) != "anthropic":  # Anthropic's errors carry a type, not a code
        body = response.json()
        found = body["error"]["code"] if protocol_of(path) == "openai" else body["errors"][0]["code"]
        # On the OpenAI paths, bad input in a missing or wrongly typed field carries OpenAI's own code.
        openai_bad_input = protocol_of(path) == "openai" and code == 5006
        assert str(found) in {str(code), *(OPENAI_BAD_INPUT_CODES if openai_bad_input else ())}, body


def with_field(path: str, name: str, raw_value: str) -> bytes:
    """The route's valid body with `name` set to `raw_value`, written as raw JSON text."""
    fields = [f"{json.dumps(key)}: {json.dumps(value)}" for key, value in VALID[path].items() if key != name]
    return ("{" + ", ".join([*fields, f"{json.dumps(name)}: {raw_value}"]) + "}").encode()


def test_the_valid_bodies_are_accepted(fuzz_client):
    """The nasties below are refused for what they add, not for a broken base (fine-tunes: LoRA is off)."""
    for path in JSON_ROUTES:
        response = post(fuzz_client, path, json.dumps(VALID[path]).encode())
        if path == FINETUNES:
            refused(response, path, 405, 5005)
        else:
            assert response.status_code == 200, (path, response.text)


# --- bytes that are not JSON ---------------------------------------------------------------------


@pytest.mark.parametrize("path", JSON_ROUTES)
@pytest.mark.parametrize(
    "body",
    [
        b'{"prompt": "\xff\xfe"}',  # invalid UTF-8 inside a string
        b"\xc3\x28",  # an invalid two-byte sequence
        b'{"prompt": "caf\xe9"}',  # Latin-1, not UTF-8
        b"\xef\xbb\xbf{}",  # a UTF-8 byte order mark
        b'{"prompt": "\\ud800"}',  # a lone surrogate escape
        b"",
        b"\x00",
    ],
    ids=["ff-fe", "c3-28", "latin-1", "bom", "lone-surrogate", "empty", "nul"],
)
def test_bytes_that_are_not_json_text(fuzz_client, path, body):
    refused(post(fuzz_client, path, body), path, 400)


@pytest.mark.parametrize("path", JSON_ROUTES)
@pytest.mark.parametrize("depth", [100_000, 10_000, 2_000])
def test_deep_nesting(fuzz_client, path, depth):
    refused(post(fuzz_client, path, b"[" * depth + b"]" * depth), path, 400)
    nested = b'{"a": ' * depth + b"1" + b"}" * depth
    refused(post(fuzz_client, path, nested), path, 400)


@pytest.mark.parametrize("path", JSON_ROUTES)
def test_deep_nesting_inside_a_valid_body(fuzz_client, path):
    """Deep, but within what the JSON reader takes: in an unknown field the body is still valid, or refused."""
    deep = "[" * 500 + "]" * 500
    response = post(fuzz_client, path, with_field(path, "extra", deep))
    assert response.status_code < 500, response.text[:500]
    if response.status_code >= 400:
        refused(response, path)


@pytest.mark.parametrize("path", JSON_ROUTES)
@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_nan_and_infinity(fuzz_client, path, constant):
    field = {RUN: "temperature", CHAT: "temperature", ACCOUNT_CHAT: "temperature", COMPLETIONS: "temperature"}
    refused(post(fuzz_client, path, with_field(path, field.get(path, "extra"), constant)), path, 400)


@pytest.mark.parametrize("path", JSON_ROUTES)
def test_a_one_megabyte_string(fuzz_client, path):
    """The fake app's body limit is 1,000,000 bytes: 413 / 3006, before anything else looks at it."""
    text = json.dumps("x" * 1_048_576)
    field = {RUN: "prompt", RUN_EMBEDDINGS: "text", COMPLETIONS: "prompt", EMBEDDINGS: "input", FINETUNES: "name"}
    refused(post(fuzz_client, path, with_field(path, field.get(path, "model"), text)), path, 413, 3006)


@pytest.mark.parametrize("path", JSON_ROUTES)
def test_duplicate_keys_the_last_one_counts(fuzz_client, path):
    """As JSON.parse does (the hosted service): a valid first value does not hide an invalid last one."""
    key = next(iter(VALID[path]))
    body = json.dumps(VALID[path])[:-1] + f", {json.dumps(key)}: 12345}}"
    refused(post(fuzz_client, path, body.encode()), path, 400)


# --- wrong types in every field ------------------------------------------------------------------

CANDIDATES: list[Any] = ["x", "", 7, -1, 1.5, True, False, None, [], ["x"], {}, {"a": 1}]


def wrong_values(body: dict[str, Any], name: str, schema: dict[str, Any]) -> list[Any]:
    """The candidates `schema` refuses in field `name` of this otherwise valid body."""
    validator = jsonschema.Draft202012Validator(schema)
    return [value for value in CANDIDATES if not validator.is_valid({**body, name: value})]


RUN_FIELDS = [("prompt", name) for name in PROMPT_FORM["properties"]] + [
    ("messages", name) for name in MESSAGES_FORM["properties"] if name not in PROMPT_FORM["properties"]
]
RUN_BASES = {"prompt": {"prompt": "hi"}, "messages": {"messages": MESSAGES}}


@pytest.mark.parametrize(("form", "name"), RUN_FIELDS, ids=[f"{form}-{name}" for form, name in RUN_FIELDS])
def test_wrong_types_in_every_field_of_the_run_input(fuzz_client, form, name):
    base = RUN_BASES[form]
    values = wrong_values(base, name, TEXT_GENERATION_INPUT)
    assert values, f"no candidate is wrong for {name}"
    for value in values:
        refused(post(fuzz_client, RUN, json.dumps({**base, name: value}).encode()), RUN, 400, 5006)


@pytest.mark.parametrize("name", ["role", "content"])
def test_wrong_types_in_the_message_fields(fuzz_client, name):
    for path, body in [(RUN, {}), (CHAT, VALID[CHAT]), (ACCOUNT_CHAT, VALID[ACCOUNT_CHAT])]:
        for value in [7, True, {"a": 1}] + ([None, ["x"]] if name == "role" else []):
            message = {**MESSAGES[0], name: value}
            refused(post(fuzz_client, path, json.dumps({**body, "messages": [message]}).encode()), path, 400, 5006)


CHAT_SCHEMA = openai.ChatCompletionRequest.model_json_schema()
CHAT_FIELDS = sorted(CHAT_SCHEMA["properties"])
# Fields the model takes as any JSON and checks itself, with values it must refuse.
HAND_WRONG = {"stop": [7, True, {"a": 1}, [1], ["a", "b", "c", "d", "e"], ""]}


@pytest.mark.parametrize("path", [CHAT, ACCOUNT_CHAT])
@pytest.mark.parametrize("name", CHAT_FIELDS)
def test_wrong_types_in_every_field_of_the_chat_request(fuzz_client, path, name):
    base = {**VALID[path], "stream": True} if name == "stream_options" else VALID[path]  # allowed only then
    values = HAND_WRONG.get(name) or wrong_values(base, name, CHAT_SCHEMA)
    assert values, f"no candidate is wrong for {name}"
    for value in values:
        refused(post(fuzz_client, path, json.dumps({**base, name: value}).encode()), path, 400, 5006)


# --- huge numbers ------------------------------------------------------------------------------------

HUGE = ["1000000", "4294967297", "9223372036854775808", "1" + "0" * 400, "1e308"]


@pytest.mark.parametrize("path", OPENAI_TEXT_ROUTES)
@pytest.mark.parametrize("value", HUGE, ids=["1e6", "2^32+1", "2^63", "1e400-int", "1e308"])
def test_huge_n(fuzz_client, path, value):
    refused(post(fuzz_client, path, with_field(path, "n", value)), path, 400, 5006)


@pytest.mark.parametrize("path", TEXT_ROUTES)
@pytest.mark.parametrize("value", HUGE, ids=["1e6", "2^32+1", "2^63", "1e400-int", "1e308"])
def test_huge_max_tokens(fuzz_client, path, value):
    """Past the context window (413 / 5021), or refused as input (400 / 5006): never generated."""
    response = post(fuzz_client, path, with_field(path, "max_tokens", value))
    refused(response, path)
    assert response.status_code in (400, 413), response.text[:500]


@pytest.mark.parametrize("path", OPENAI_TEXT_ROUTES)
@pytest.mark.parametrize("value", HUGE, ids=["1e6", "2^32+1", "2^63", "1e400-int", "1e308"])
def test_huge_max_completion_tokens(fuzz_client, path, value):
    response = post(fuzz_client, path, with_field(path, "max_completion_tokens", value))
    refused(response, path)
    assert response.status_code in (400, 413), response.text[:500]


@pytest.mark.parametrize("path", [RUN, CHAT, COMPLETIONS])
@pytest.mark.parametrize("name", ["seed", "top_k"])
def test_huge_integers_in_the_other_integer_fields(fuzz_client, path, name):
    refused(post(fuzz_client, path, with_field(path, name, "1" + "0" * 400)), path, 400, 5006)


# --- tools --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [RUN, CHAT, ACCOUNT_CHAT])
@pytest.mark.parametrize("tool", [{}, {"type": "function"}, {"type": "function", "function": {}}, {"function": 7}])
def test_a_malformed_tool_is_never_a_server_error(fuzz_client, path, tool):
    body = {**VALID[path], "messages": MESSAGES, "tools": [tool]}
    if path == RUN:
        body.pop("prompt")
    response = post(fuzz_client, path, json.dumps(body).encode())
    assert response.status_code < 500, response.text[:500]
    if response.status_code >= 400:
        refused(response, path)


# --- names that look like a protocol's path ----------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        f"{ACCOUNT}/run/x/ai/v1/y",  # a model name with /ai/v1/ in it: still the run route, Workers AI's
        f"{ACCOUNT}/run/@cf/ai/v1/chat/completions",
        f"{ACCOUNT}/finetunes/x%2Fai%2Fv1%2Fz",  # a fine-tune name, escaped: still Workers AI's routes
    ],
)
def test_a_name_that_contains_ai_v1_keeps_its_routes_protocol(fuzz_client, path):
    response = post(fuzz_client, path, b'{"prompt": "hi"}')
    assert protocol_of(path) == "workers_ai"
    refused(response, path)


@pytest.mark.parametrize("account", ["%0A", "%09", "%20", "a%3Fb", "a%23b", "..."])
def test_an_odd_account_id_keeps_the_openai_protocol(fuzz_client, account):
    """Whatever the account id holds (a newline, which URL parsing drops; ?, #), the route is OpenAI's."""
    path = f"/client/v4/accounts/{account}/ai/v1/completions"
    assert protocol_of(path) == "openai"
    refused(post(fuzz_client, path, b"{"), path, 400, 5006)


NEWER_REQUESTS = {ANTHROPIC_MESSAGES: anthropic.MessagesRequest, RESPONSES: responses.ResponseRequest}
NEWER_FIELDS = [
    (path, name) for path, model in NEWER_REQUESTS.items() for name in model.model_json_schema()["properties"]
]


@pytest.mark.parametrize(("path", "name"), NEWER_FIELDS, ids=[f"{path}-{name}" for path, name in NEWER_FIELDS])
def test_wrong_types_in_every_field_of_the_messages_and_responses_requests(fuzz_client, path, name):
    schema = NEWER_REQUESTS[path].model_json_schema()
    values = wrong_values(VALID[path], name, schema)
    assert values, f"no candidate is wrong for {name}"
    for value in values:
        refused(post(fuzz_client, path, json.dumps({**VALID[path], name: value}).encode()), path, 400, 5006)
