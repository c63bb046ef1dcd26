"""Hypothesis properties of the input validator and of the JSON body reader.

The validator (server/protocol/validation.py) against the published input schemas: it never raises,
it answers a list of strings, inputs generated from the schema are valid, and it agrees with a reference
JSON Schema validator (jsonschema) on every instance. The reader (server/api/common.py read_json_body),
through HTTP on the fake app: no bytes, whatever the Content-Type, get a 5xx, a hang or an error outside
the route's protocol envelope.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import jsonschema
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from server.api.finetunes import CREATE_INPUT
from server.protocol.validation import validate
from server.protocol.workers_ai import TEXT_EMBEDDINGS_INPUT, TEXT_GENERATION_INPUT
from tests.fuzz import strategies
from tests.fuzz.strategies import (
    bodies,
    from_schema,
    json_values,
    one_field_off,
    property_names,
    scalars,
    top_level_names,
)
from tests.support.api_fuzz import RANDOM, RESPONSE_TIME_LIMIT_S
from tests.support.envelopes import assert_error_envelope
from tests.support.fakes import EMBEDDING_MODEL, TEXT_MODEL
from tests.support.fuzz_tally import TALLY

SCHEMAS = {
    "text-generation": TEXT_GENERATION_INPUT,
    "text-embeddings": TEXT_EMBEDDINGS_INPUT,
    "finetune-create": CREATE_INPUT,
}

fuzz_settings = settings(
    max_examples=strategies.EXAMPLES,
    deadline=None,
    database=None,
    derandomize=not RANDOM,
    # The fast tier reports a failure as found, at once; the long run shrinks it to its simplest form.
    phases=[phase for phase in Phase if RANDOM or phase is not Phase.shrink],
    suppress_health_check=list(HealthCheck),
)


REFERENCE = {id(schema): jsonschema.Draft202012Validator(schema) for schema in SCHEMAS.values()}


def reference_valid(instance: Any, schema: dict[str, Any]) -> bool:
    return REFERENCE[id(schema)].is_valid(instance)


def instances(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Valid inputs, inputs one field away from valid, and anything at all aimed at the schema's fields."""
    return st.one_of(from_schema(schema), one_field_off(schema), json_values(property_names(schema)))


# --- the validator --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCHEMAS))
@settings(fuzz_settings, max_examples=strategies.EXAMPLES * 3)  # a pure function: cheap cases
@given(data=st.data())
def test_the_validator_never_raises_and_answers_strings(name, data):
    """Any JSON value, alone and in each top-level field of a valid input in turn."""
    schema = SCHEMAS[name]
    value = data.draw(scalars | json_values(property_names(schema)), label="value")
    base = data.draw(from_schema(schema), label="valid input")
    for instance in [value, *({**base, field: value} for field in top_level_names(schema))]:
        TALLY.case("hypothesis", f"validate against {name}", 0)
        problems = validate(instance, schema)
        assert isinstance(problems, list), instance
        assert all(isinstance(problem, str) and problem for problem in problems), instance


@pytest.mark.parametrize("name", sorted(SCHEMAS))
@fuzz_settings
@given(data=st.data())
def test_inputs_generated_from_the_schema_are_valid(name, data):
    schema = SCHEMAS[name]
    instance = data.draw(from_schema(schema).filter(lambda value: reference_valid(value, schema)))
    TALLY.case("hypothesis", f"valid input for {name}", 0)
    assert validate(instance, schema) == []


@pytest.mark.parametrize("name", sorted(SCHEMAS))
@fuzz_settings
@given(data=st.data())
def test_the_validator_agrees_with_a_reference_json_schema_validator(name, data):
    """The document publishes these schemas to clients, whose tools read them as standard JSON Schema."""
    schema = SCHEMAS[name]
    instance = data.draw(instances(schema))
    TALLY.case("hypothesis", f"validate vs jsonschema for {name}", 0)
    assert (validate(instance, schema) == []) == reference_valid(instance, schema), validate(instance, schema)


def test_the_valid_input_strategy_reaches_both_text_forms():
    """The strategy above is not vacuous: it yields valid prompt and messages inputs."""
    seen: set[str] = set()

    @settings(max_examples=60, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(from_schema(TEXT_GENERATION_INPUT).filter(lambda v: reference_valid(v, TEXT_GENERATION_INPUT)))
    def collect(instance):
        seen.update({"prompt", "messages"} & set(instance))

    collect()
    assert seen == {"prompt", "messages"}


# --- the body reader, over HTTP -------------------------------------------------------------------

ACCOUNT = "/client/v4/accounts/fuzz/ai"
CHAT_BODY = {"model": TEXT_MODEL, "messages": [{"role": "user", "content": "hi"}]}
JSON_ROUTES: dict[str, st.SearchStrategy[Any]] = {
    f"{ACCOUNT}/run/{TEXT_MODEL}": from_schema(TEXT_GENERATION_INPUT),
    f"{ACCOUNT}/run/{EMBEDDING_MODEL}": from_schema(TEXT_EMBEDDINGS_INPUT),
    f"{ACCOUNT}/finetunes": from_schema(CREATE_INPUT),
    "/v1/chat/completions": st.just(CHAT_BODY),
    f"{ACCOUNT}/v1/chat/completions": st.just(CHAT_BODY),
    "/v1/completions": st.just({"model": TEXT_MODEL, "prompt": "Once upon"}),
    "/v1/embeddings": st.just({"model": EMBEDDING_MODEL, "input": ["a", "b"]}),
}
CONTENT_TYPES = [None, "application/json", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]


@pytest.mark.parametrize("path", sorted(JSON_ROUTES))
@fuzz_settings
@given(data=st.data())
def test_no_body_gets_a_server_error(fuzz_client: httpx.Client, path, data):
    body = data.draw(bodies(JSON_ROUTES[path]), label="body")
    content_type = data.draw(st.sampled_from(CONTENT_TYPES), label="content-type")
    # A connection of its own: after an unexpected exception the server resets it (see test_nasties.post).
    headers = {"connection": "close", **({"content-type": content_type} if content_type else {})}
    started = time.monotonic()
    response = fuzz_client.post(path, content=body, headers=headers, timeout=RESPONSE_TIME_LIMIT_S)
    elapsed = time.monotonic() - started
    TALLY.case("hypothesis", f"POST {path} (any bytes)", response.status_code)
    assert response.status_code < 500, response.text
    assert elapsed < RESPONSE_TIME_LIMIT_S
    if response.status_code >= 400:
        assert_error_envelope(path, response.status_code, response.headers.get("content-type", ""), response.content)
