"""/openapi.json is a valid OpenAPI document, and its request bodies are the schemas the server enforces."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from pydantic.json_schema import models_json_schema

from server.api.finetunes import CREATE_INPUT
from server.api.openapi import ANTHROPIC_ERROR, OPENAI_ERROR, WORKERS_AI_ERROR
from server.protocol import openai
from server.protocol.workers_ai import TEXT_EMBEDDINGS_INPUT, TEXT_GENERATION_INPUT
from tests.support.servers import ServedApp

ACCOUNT = "/client/v4/accounts/{account_id}/ai"
RUN = f"{ACCOUNT}/run/{{model}}"
OPENAI_BODIES = {
    "/chat/completions": openai.ChatCompletionRequest,
    "/completions": openai.CompletionRequest,
    "/embeddings": openai.EmbeddingsRequest,
}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture(scope="module")
def document(fuzz_app: ServedApp) -> dict[str, Any]:
    response = httpx.get(f"{fuzz_app.base_url}/openapi.json", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> Any:
    """`schema` with every local $ref replaced by what it points to (the schemas here are not recursive)."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            target: Any = document
            for part in schema["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return resolve(document, target)
        return {key: resolve(document, value) for key, value in schema.items()}
    if isinstance(schema, list):
        return [resolve(document, item) for item in schema]
    return schema


def body_schema(document: dict[str, Any], path: str, method: str = "post", media: str = "application/json") -> Any:
    return resolve(document, document["paths"][path][method]["requestBody"]["content"][media]["schema"])


# --- valid ------------------------------------------------------------------------------------


def test_the_document_is_valid_openapi(document):
    assert document["openapi"].startswith("3.1")
    validate(document)  # raises on the first problem


def test_every_templated_path_parameter_is_declared_by_every_operation(document):
    for path, method, operation in operations(document):
        declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        templated = {part[1:-1] for part in path.split("/") if part.startswith("{")}
        assert declared == templated, f"{method.upper()} {path} declares {declared}, its path has {templated}"


def test_account_id_is_declared_on_every_account_operation(document):
    account_operations = [(p, m, o) for p, m, o in operations(document) if p.startswith("/client/v4/accounts/")]
    assert len(account_operations) >= 13
    for path, method, operation in account_operations:
        [account] = [p for p in operation["parameters"] if p["name"] == "account_id"]
        assert account["in"] == "path" and account["required"] is True, (method, path)


def test_every_post_describes_its_body(document):
    posts = [(path, operation) for path, method, operation in operations(document) if method == "post"]
    assert len(posts) == 17
    for path, operation in posts:
        body = operation.get("requestBody")
        assert body and body["required"] is True and body["content"], path


def test_a_broken_copy_missing_account_id_is_refused():
    """The validator is not a rubber stamp: a copy without one operation's account_id fails."""
    broken = copy.deepcopy(current_document())
    operation = broken["paths"][f"{ACCOUNT}/models/search"]["get"]
    operation["parameters"] = [p for p in operation["parameters"] if p["name"] != "account_id"]
    with pytest.raises(OpenAPIValidationError, match="account_id"):
        validate(broken)


def test_a_broken_copy_with_a_dangling_reference_is_refused():
    broken = copy.deepcopy(current_document())
    del broken["components"]["schemas"]["ChatMessage"]  # ChatCompletionRequest refers to it
    with pytest.raises(Exception, match="Message"):
        validate(broken)


def current_document() -> dict[str, Any]:
    from tests.support.api_fuzz import app_document

    return app_document()


# --- the bodies are the enforced schemas --------------------------------------------------------


def test_the_run_body_is_either_published_input_schema(document):
    assert body_schema(document, RUN) == {"oneOf": [TEXT_GENERATION_INPUT, TEXT_EMBEDDINGS_INPUT]}


def test_the_published_model_schema_is_the_documented_run_body(document, fuzz_app: ServedApp):
    """What /ai/models/schema publishes for each task is one of the run body's branches, less the
    per-model defaults it fills in."""
    branches = body_schema(document, RUN)["oneOf"]
    for model in ("@cf/test/fake", "@cf/test/embed"):
        response = httpx.get(
            f"{fuzz_app.base_url}/client/v4/accounts/a/ai/models/schema", params={"model": model}, timeout=10
        )
        published = without_defaults(response.json()["result"]["input"])
        assert published in [without_defaults(branch) for branch in branches], model


def without_defaults(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {key: without_defaults(value) for key, value in schema.items() if key != "default"}
    if isinstance(schema, list):
        return [without_defaults(item) for item in schema]
    return schema


@pytest.mark.parametrize("prefix", ["/v1", f"{ACCOUNT}/v1"])
@pytest.mark.parametrize("route", sorted(OPENAI_BODIES))
def test_the_openai_bodies_are_the_request_models(document, prefix, route):
    model = OPENAI_BODIES[route]
    _, definitions = models_json_schema([(model, "validation")], ref_template="#/components/schemas/{model}")
    expected = resolve({"components": {"schemas": definitions["$defs"]}}, definitions["$defs"][model.__name__])
    assert body_schema(document, prefix + route) == expected


def test_the_finetune_create_body_is_its_validator_schema(document):
    assert body_schema(document, f"{ACCOUNT}/finetunes") == CREATE_INPUT


def test_the_asset_upload_is_multipart_file_name_and_file(document):
    schema = body_schema(document, f"{ACCOUNT}/finetunes/{{id_or_name}}/finetune-assets", media="multipart/form-data")
    assert schema["required"] == ["file_name", "file"]
    assert schema["properties"]["file"]["format"] == "binary"
    assert set(schema["properties"]["file_name"]["enum"]) == {"adapter_config.json", "adapter_model.safetensors"}


def test_errors_are_documented_in_their_protocols_envelope(document):
    for path, _, operation in operations(document):
        responses = operation["responses"]
        assert "422" not in responses, path  # FastAPI's; never sent
        if not path.startswith(("/v1/", "/client/v4/")):
            continue
        if path.endswith(("/messages", "/messages/count_tokens")):
            expected = ANTHROPIC_ERROR
        else:
            expected = OPENAI_ERROR if path.startswith("/v1/") or "/ai/v1/" in path else WORKERS_AI_ERROR
        for status in ("4XX", "5XX"):
            assert resolve(document, responses[status]["content"]["application/json"]["schema"]) == expected, path


def test_the_error_schemas_accept_the_servers_errors_and_nothing_else(fuzz_client):
    workers_ai = fuzz_client.post("/client/v4/accounts/a/ai/run/@cf/test/fake", json={"prompt": ""}).json()
    chat = fuzz_client.post("/v1/chat/completions", json={"model": "@cf/test/fake", "messages": []}).json()
    jsonschema.validate(workers_ai, WORKERS_AI_ERROR)
    jsonschema.validate(chat, OPENAI_ERROR)
    for wrong in ({**workers_ai, "success": True}, {**workers_ai, "errors": []}, chat):
        assert not jsonschema.Draft202012Validator(WORKERS_AI_ERROR).is_valid(wrong)
    assert not jsonschema.Draft202012Validator(OPENAI_ERROR).is_valid({"error": {"message": "x"}})


def test_metrics_is_documented_as_text(document):
    assert list(document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
