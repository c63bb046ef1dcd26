"""The catalog endpoints, built from the config the server runs, and the schemas it really enforces."""

from __future__ import annotations

import jsonschema
import pytest

from server.config import load_settings
from tests.support.repo import DEFAULT_CONFIG, REAL_MODEL, STAND_IN

EMBEDDING_MODEL = "@cf/sentence-transformers/all-minilm-l6-v2"
AI = "/client/v4/accounts/test-account/ai"


def served_names():
    return [name for model in load_settings(DEFAULT_CONFIG).models for name in model.served_names]


def search(client, **params):
    response = client.get(f"{AI}/models/search", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    return body


def test_search_lists_every_served_name_with_the_stand_in_marked(client):
    items = search(client)["result"]
    assert [item["name"] for item in items] == served_names()
    by_name = {item["name"]: item for item in items}
    assert by_name[STAND_IN]["description"].startswith(f"Stand-in: this name is answered by {REAL_MODEL}")
    assert "Stand-in" not in by_name[REAL_MODEL]["description"]
    for item in items:
        assert set(item) == {"id", "name", "description", "task", "tags", "properties"}
        assert set(item["task"]) == {"id", "name", "description"}
    assert by_name[EMBEDDING_MODEL]["task"]["name"] == "Text Embeddings"


def test_search_filters_and_pages(client):
    assert [i["name"] for i in search(client, task="Text Embeddings")["result"]] == [EMBEDDING_MODEL]
    assert [i["name"] for i in search(client, author="meta")["result"]] == [STAND_IN]
    assert [i["name"] for i in search(client, search="minilm")["result"]] == [EMBEDDING_MODEL]
    first = search(client, per_page=2, page=1)
    last = search(client, per_page=2, page=2)
    assert [i["name"] for i in first["result"] + last["result"]] == served_names()
    assert first["result_info"] == {"page": 1, "per_page": 2, "count": 2, "total_count": 3}
    assert search(client, per_page=2, page=3)["result"] == []
    response = client.get(f"{AI}/models/search", params={"page": 0})
    assert response.status_code == 400 and response.json()["errors"][0]["code"] == 5006


def test_schema_is_the_one_the_validator_enforces(client, server):
    schema = client.get(f"{AI}/models/schema", params={"model": STAND_IN}).json()["result"]
    assert set(schema) == {"input", "output"}
    good = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    jsonschema.validate(good, schema["input"])
    assert client.post(server.run_url(), json=good).status_code == 200
    for bad in ({"prompt": "Hi", "temperature": 6}, {"prompt": ""}, {"prompt": "Hi", "messages": []}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema["input"])
        assert client.post(server.run_url(), json=bad).status_code == 400
    answer = client.post(server.run_url(), json=good).json()["result"]
    jsonschema.validate(answer, schema["output"])


def test_embedding_model_schema(client, server):
    schema = client.get(f"{AI}/models/schema", params={"model": EMBEDDING_MODEL}).json()["result"]
    body = {"text": ["a", "b"]}
    jsonschema.validate(body, schema["input"])
    answer = client.post(server.run_url(EMBEDDING_MODEL), json=body).json()["result"]
    jsonschema.validate(answer, schema["output"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"text": 5}, schema["input"])


def test_schema_of_an_unknown_model(client):
    response = client.get(f"{AI}/models/schema", params={"model": "@cf/nobody/nothing"})
    assert response.status_code == 400 and response.json()["errors"][0]["code"] == 5007


@pytest.mark.parametrize("path", ["/v1/models", f"{AI}/v1/models"])
def test_openai_model_list(client, path):
    body = client.get(path).json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == served_names()
    assert all(m["object"] == "model" and isinstance(m["created"], int) for m in body["data"])
