"""Embeddings through both protocols on the fake embedding engine."""

from __future__ import annotations

import base64
import math
import struct

import pytest

from tests.pipeline.requests import EMBEDDINGS, run
from tests.support.envelopes import openai_body, openai_error, result, workers_ai_error
from tests.support.fakes import (
    EMBEDDING_CONTEXT_WINDOW,
    EMBEDDING_DIMENSIONS,
    EMBEDDING_MODEL,
    FakeTokenizer,
    unit_vector,
)
from tests.support.metrics import scrape

TEXTS = ["the quick brown fox", "hello"]
IDS = [FakeTokenizer().encode(text) for text in TEXTS]  # with BOS: 5 and 2 tokens


def test_run_endpoint_embeds_each_text_in_order(client, embedder):
    response = run(client, {"text": TEXTS}, model=EMBEDDING_MODEL)
    answer = result(response)
    assert embedder.last_token_ids == IDS and embedder.last_pooling == "mean"
    assert answer == {
        "shape": [2, EMBEDDING_DIMENSIONS],
        "data": [unit_vector(ids, "mean") for ids in IDS],
        "pooling": "mean",
    }
    assert all(math.isclose(math.hypot(*vector), 1.0) for vector in answer["data"])
    assert response.headers["cf-ai-req-id"] == embedder.requests[-1]


def test_run_endpoint_passes_the_pooling(client, embedder):
    answer = result(run(client, {"text": "hello", "pooling": "cls"}, model=EMBEDDING_MODEL))
    assert embedder.last_pooling == "cls"
    assert answer["data"] == [unit_vector(IDS[1], "cls")] and answer["pooling"] == "cls"


def test_openai_embeddings_have_the_same_vectors_and_count_usage(client, embedder):
    before = scrape(client)
    response = client.post(EMBEDDINGS, json={"model": EMBEDDING_MODEL, "input": TEXTS})
    body = openai_body(response)
    assert body["object"] == "list" and body["model"] == EMBEDDING_MODEL
    assert [(item["object"], item["index"]) for item in body["data"]] == [("embedding", 0), ("embedding", 1)]
    assert [item["embedding"] for item in body["data"]] == [unit_vector(ids, "mean") for ids in IDS]
    assert body["usage"] == {"prompt_tokens": 7, "total_tokens": 7}
    assert response.headers["cf-ai-req-id"] == embedder.requests[-1]
    counted = scrape(client) - before
    assert counted.value("wai_requests_total", model=EMBEDDING_MODEL, protocol="openai", status="200", code="none") == 1
    assert counted.value("wai_prompt_tokens_total", model=EMBEDDING_MODEL) == 7


def test_openai_base64_embeddings_decode_to_the_vectors(client, embedder):
    body = openai_body(
        client.post(EMBEDDINGS, json={"model": EMBEDDING_MODEL, "input": "hello", "encoding_format": "base64"})
    )
    decoded = struct.unpack(f"<{EMBEDDING_DIMENSIONS}f", base64.b64decode(body["data"][0]["embedding"]))
    assert decoded == pytest.approx(unit_vector(IDS[1], "mean"), abs=1e-6)


def test_openai_dimensions_must_be_the_models(client, embedder):
    same = client.post(EMBEDDINGS, json={"model": EMBEDDING_MODEL, "input": "hi", "dimensions": EMBEDDING_DIMENSIONS})
    assert same.status_code == 200, same.text
    other = client.post(EMBEDDINGS, json={"model": EMBEDDING_MODEL, "input": "hi", "dimensions": 4})
    assert openai_error(other, 400, 5006)["param"] == "dimensions"


def test_a_text_over_the_window_is_413_5021(client, embedder):
    words = " ".join(["w"] * EMBEDDING_CONTEXT_WINDOW)  # + BOS: one token over
    message = workers_ai_error(run(client, {"text": ["ok", words]}, model=EMBEDDING_MODEL), 413, 5021)
    assert f"({EMBEDDING_CONTEXT_WINDOW + 1})" in message
    assert embedder.requests == []
    response = client.post(EMBEDDINGS, json={"model": EMBEDDING_MODEL, "input": words})
    error = openai_error(response, 400, "context_length_exceeded")  # OpenAI's answer
    assert error["param"] == "input" and "maximum context length is" in error["message"]
