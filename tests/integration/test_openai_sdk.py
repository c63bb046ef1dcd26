"""The official `openai` Python SDK against the real server, base URL pointed at wai."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest
from pydantic import BaseModel

from tests.support.repo import STAND_IN

EMBEDDING_MODEL = "@cf/sentence-transformers/all-minilm-l6-v2"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(params=["/v1", "/client/v4/accounts/test-account/ai/v1"])
def sdk(server, request):
    with openai.OpenAI(base_url=server.base_url + request.param, api_key=server.api_key, max_retries=0) as client:
        yield client


def test_chat(sdk):
    completion = sdk.chat.completions.create(model=STAND_IN, messages=QUESTION, max_tokens=16, seed=1)
    assert completion.choices[0].message.content.strip()
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_chat_stream_with_usage(sdk):
    sync = sdk.chat.completions.create(model=STAND_IN, messages=QUESTION, max_tokens=24, seed=5, temperature=1)
    stream = sdk.chat.completions.create(
        model=STAND_IN,
        messages=QUESTION,
        max_tokens=24,
        seed=5,
        temperature=1,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == sync.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == sync.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == sync.usage.prompt_tokens


class Person(BaseModel):
    name: str
    age: int


def test_json_schema_with_parse(sdk):
    completion = sdk.chat.completions.parse(
        model=STAND_IN,
        messages=[{"role": "user", "content": "Invent a person."}],
        max_tokens=100,
        seed=2,
        response_format=Person,
    )
    person = completion.choices[0].message.parsed
    assert isinstance(person, Person) and person.name


def test_json_schema_as_a_dict(sdk):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    completion = sdk.chat.completions.create(
        model=STAND_IN,
        messages=QUESTION,
        max_tokens=60,
        seed=3,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "city", "schema": schema, "strict": True},
        },
    )
    jsonschema.validate(json.loads(completion.choices[0].message.content), schema)


def test_errors_raise_the_sdk_exceptions(sdk, server):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model=STAND_IN, messages=QUESTION, temperature=3)
    assert caught.value.body["param"] == "temperature"
    with pytest.raises(openai.NotFoundError, match="No such model") as missing:
        sdk.chat.completions.create(model="@cf/nobody/nothing", messages=QUESTION)
    assert missing.value.code == "model_not_found"
    with openai.OpenAI(base_url=str(sdk.base_url), api_key="wrong", max_retries=0) as anonymous:
        with pytest.raises(openai.AuthenticationError):
            anonymous.models.list()


def test_embeddings(sdk):
    # The SDK asks for base64 by default and decodes it; ask for floats too and compare.
    default = sdk.embeddings.create(model=EMBEDDING_MODEL, input=["first text", "second text"])
    floats = sdk.embeddings.create(model=EMBEDDING_MODEL, input=["first text", "second text"], encoding_format="float")
    assert [len(item.embedding) for item in default.data] == [384, 384]
    assert default.data[1].embedding == pytest.approx(floats.data[1].embedding, rel=1e-6)
    assert default.usage.prompt_tokens == floats.usage.prompt_tokens > 4


def test_models_list(sdk):
    ids = [model.id for model in sdk.models.list()]
    assert STAND_IN in ids and EMBEDDING_MODEL in ids


def test_a_prompt_over_the_context_window_is_the_sdks_bad_request_with_openais_code(sdk):
    # What LangChain and LiteLLM look for to trim a conversation: status 400, this code and these words.
    for create, too_long in (
        (lambda: sdk.chat.completions.create(model=STAND_IN, messages=QUESTION, max_tokens=7968), "messages"),
        (lambda: sdk.completions.create(model=STAND_IN, prompt="Once upon a time", max_tokens=7968), "prompt"),
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            create()
        assert (caught.value.status_code, caught.value.code, caught.value.param) == (
            400,
            "context_length_exceeded",
            too_long,
        )
        assert caught.value.type == "invalid_request_error"
        assert "This model's maximum context length is 7968 tokens" in caught.value.message
