"""The official `cloudflare` Python SDK against the real server, base URL pointed at wai."""

from __future__ import annotations

import math

import pytest
from cloudflare import AuthenticationError, BadRequestError, Cloudflare

from tests.support.repo import STAND_IN

EMBEDDING_MODEL = "@cf/sentence-transformers/all-minilm-l6-v2"
ACCOUNT = "test-account"


@pytest.fixture
def cf(server):
    with Cloudflare(api_token=server.api_key, base_url=server.base_url + "/client/v4", max_retries=0) as client:
        yield client


def test_run_with_a_prompt(cf):
    result = cf.ai.run(STAND_IN, account_id=ACCOUNT, prompt="What is the capital of France?", max_tokens=16)
    assert result["response"].strip()
    assert result["usage"]["completion_tokens"] >= 1


def test_run_with_messages(cf):
    result = cf.ai.run(
        STAND_IN,
        account_id=ACCOUNT,
        max_tokens=16,
        seed=4,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fruit."}],
    )
    assert result["response"].strip() and result["tool_calls"] == []


def test_run_text_embeddings(cf):
    result = cf.ai.run(EMBEDDING_MODEL, account_id=ACCOUNT, text=["a cat", "a dog"])
    assert result["shape"] == [2, 384] and result["pooling"] == "mean"
    assert all(math.isclose(math.hypot(*vector), 1.0, rel_tol=1e-4) for vector in result["data"])


def test_models_list_pages_through_every_name(cf, server):
    names = [model["name"] for model in cf.ai.models.list(account_id=ACCOUNT, per_page=1)]
    assert names == [
        STAND_IN.replace("meta/llama-3-8b-instruct", "huggingfacetb/smollm2-135m-instruct"),
        STAND_IN,
        EMBEDDING_MODEL,
    ]
    texts = list(cf.ai.models.list(account_id=ACCOUNT, task="Text Embeddings"))
    assert [model["name"] for model in texts] == [EMBEDDING_MODEL]


def test_models_schema_get(cf):
    schema = cf.ai.models.schema.get(account_id=ACCOUNT, model=STAND_IN).to_dict()
    assert set(schema) == {"input", "output"}
    assert [form["title"] for form in schema["input"]["oneOf"]] == ["Prompt", "Messages"]
    embeddings = cf.ai.models.schema.get(account_id=ACCOUNT, model=EMBEDDING_MODEL).to_dict()
    assert embeddings["input"]["required"] == ["text"]


def test_errors_raise_the_sdk_exceptions(cf, server):
    with pytest.raises(BadRequestError, match="5006"):
        cf.ai.run(STAND_IN, account_id=ACCOUNT, prompt="Hi", temperature=6)
    with Cloudflare(api_token="wrong", base_url=server.base_url + "/client/v4", max_retries=0) as anonymous:
        with pytest.raises(AuthenticationError):
            anonymous.ai.run(STAND_IN, account_id=ACCOUNT, prompt="Hi")
