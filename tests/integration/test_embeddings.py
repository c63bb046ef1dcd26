"""Embeddings on the real pooling engine, on both protocols, checked against sentence-transformers."""

from __future__ import annotations

import base64
import math
import struct

import pytest
from sentence_transformers import SentenceTransformer

from server.config import load_settings
from server.prepare import resolve_checkpoint
from tests.support.repo import DEFAULT_CONFIG, STAND_IN

MODEL = "@cf/sentence-transformers/all-minilm-l6-v2"
TEXTS = [
    "The cat sits on the mat.",
    "A quarterly report on European wheat prices.",
    "Wie spät ist es?",
    "x" * 300,
]
PATHS = ["/v1/embeddings", "/client/v4/accounts/test-account/ai/v1/embeddings"]


@pytest.fixture(scope="module")
def reference():
    """sentence-transformers on the very folder the server loads."""
    settings = load_settings(DEFAULT_CONFIG)
    model = next(m for m in settings.models if m.name == MODEL)
    return SentenceTransformer(resolve_checkpoint(model, settings.cache_dir), device="cpu")


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True)) / (math.hypot(*a) * math.hypot(*b))


def embed(client, body, path=PATHS[0]):
    response = client.post(path, json={"model": MODEL, **body})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("path", PATHS)
def test_openai_embeddings_agree_with_sentence_transformers(client, reference, path):
    body = embed(client, {"input": TEXTS}, path)
    assert body["object"] == "list" and body["model"] == MODEL
    assert [item["index"] for item in body["data"]] == list(range(len(TEXTS)))
    expected = reference.encode(TEXTS)
    for item, want in zip(body["data"], expected, strict=True):
        assert item["object"] == "embedding" and len(item["embedding"]) == 384
        assert cosine(item["embedding"], want.tolist()) >= 0.999
    tokens = sum(len(reference.tokenizer(text)["input_ids"]) for text in TEXTS)
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


def test_single_string_and_base64(client):
    as_float = embed(client, {"input": TEXTS[0]})["data"]
    as_base64 = embed(client, {"input": TEXTS[0], "encoding_format": "base64"})["data"]
    assert len(as_float) == len(as_base64) == 1
    decoded = struct.unpack("<384f", base64.b64decode(as_base64[0]["embedding"]))
    assert decoded == pytest.approx(as_float[0]["embedding"], rel=1e-6)


def test_run_endpoint_returns_shape_data_and_pooling(client, server, reference):
    response = client.post(server.run_url(MODEL), json={"text": TEXTS[:2]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["errors"] == []
    result = body["result"]
    assert result["shape"] == [2, 384] and result["pooling"] == "mean" and len(result["data"]) == 2
    for vector, want in zip(result["data"], reference.encode(TEXTS[:2]), strict=True):
        assert cosine(vector, want.tolist()) >= 0.999
    single = client.post(server.run_url(MODEL), json={"text": TEXTS[0]}).json()["result"]
    assert single["shape"] == [1, 384] and single["data"][0] == pytest.approx(result["data"][0], rel=1e-5)


def test_cls_pooling_is_the_first_token_vector(client, server, reference):
    result = client.post(server.run_url(MODEL), json={"text": TEXTS[1], "pooling": "cls"}).json()["result"]
    assert result["pooling"] == "cls"
    token_vectors = reference.encode(TEXTS[1], output_value="token_embeddings")
    first = token_vectors[0] / token_vectors[0].norm()
    assert cosine(result["data"][0], first.tolist()) >= 0.999
    mean = client.post(server.run_url(MODEL), json={"text": TEXTS[1]}).json()["result"]["data"][0]
    assert cosine(result["data"][0], mean) < 0.99


@pytest.mark.parametrize(
    "body, message",
    [
        ({}, "required properties at '/' are 'text'"),
        ({"text": ""}, "Length of '/text' must be >= 1 not met"),
        ({"text": []}, "Length of '/text' must be >= 1 not met"),
        ({"text": "a", "pooling": "max"}, "enum max not in mean,cls at '/pooling'"),
        ({"prompt": "a"}, "required properties at '/' are 'text'"),
    ],
)
def test_run_endpoint_validates_the_embeddings_schema(client, server, body, message):
    response = client.post(server.run_url(MODEL), json=body)
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["code"] == 5006 and message in error["message"]


def test_text_over_the_window_is_refused_not_cut(client, server):
    long_text = "word " * 300
    response = client.post(server.run_url(MODEL), json={"text": long_text})
    assert response.status_code == 413 and response.json()["errors"][0]["code"] == 5021
    response = client.post(PATHS[0], json={"model": MODEL, "input": ["short", long_text]})
    assert response.status_code == 400 and response.json()["error"]["param"] == "input"
    assert response.json()["error"]["code"] == "context_length_exceeded"


def test_openai_embedding_errors(client):
    for body, param in (
        ({"input": []}, "input"),
        ({"input": "a", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "a", "dimensions": 128}, "dimensions"),
    ):
        response = client.post(PATHS[0], json={"model": MODEL, **body})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == param
    response = client.post(PATHS[0], json={"model": STAND_IN, "input": "a"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
