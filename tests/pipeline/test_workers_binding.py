"""The Workers binding routes on the fake engine: what workerd's `cloudflare-internal:ai-api` module and
wrangler's remote form send, and what that module reads back (the real runtime: tests/integration)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.pipeline.requests import ACCOUNT_PATH, QUESTION
from tests.support.envelopes import usage
from tests.support.fakes import EMBEDDING_MODEL, TEXT_MODEL
from tests.support.sse import events, json_events

# The headers the runtime sends with every call (src/cloudflare/internal/ai-api.ts in workerd).
RUNTIME_HEADERS = {"content-type": "application/json", "cf-consn-sdk-version": "2.0.0"}
PROXY = f"{ACCOUNT_PATH}/run/proxy"
ANSWER = "Paris is the capital of France."


def call(
    client: httpx.Client,
    inputs: Any,
    options: Any = None,
    model: str | None = TEXT_MODEL,
    path: str = "/run?version=3",
    **headers: str,
) -> httpx.Response:
    sent = {**RUNTIME_HEADERS, **headers}
    if model is not None:
        sent["cf-consn-model-id"] = model
    return client.post(path, json={"inputs": inputs, "options": options or {}}, headers=sent)


def bare(response: httpx.Response) -> dict[str, Any]:
    """The runtime parses the body only for a content type of exactly application/json."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


def binding_error(response: httpx.Response, status: int, code: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()
    assert set(error) == {"internalCode", "message", "name", "description"} and error["internalCode"] == code
    return error


def test_a_prompt_gets_the_bare_result_and_the_request_id(client, engine):
    response = call(client, {"prompt": "Capital of France?"})
    assert bare(response) == {"response": ANSWER, "tool_calls": [], "usage": usage(5, 6)}
    assert response.headers["cf-ai-req-id"] == engine.requests[-1]


def test_messages_and_run_options_reach_the_engine(client, engine):
    assert bare(call(client, {"messages": QUESTION, "max_tokens": 3}, {"rejectIfBusy": True}))["response"] == (
        "Paris is the"
    )
    assert engine.last_params.max_tokens == 3


def test_options_the_runtime_adds_are_accepted(client):
    # `gateway` sends the call to /ai-gateway/run; `returnRawResponse` only changes what the runtime returns.
    options = {"gateway": {"id": "default"}, "returnRawResponse": True}
    answer = call(client, {"prompt": "Hi"}, options, path="/ai-gateway/run?version=3")
    assert bare(answer)["response"] == ANSWER
    assert answer.headers["cf-aig-log-id"], "through the gateway: the runtime keeps the log id"


def test_a_gateway_that_does_not_exist_is_the_runtimes_error(client, engine):
    options = {"gateway": {"id": "no-such-gateway"}}
    answer = call(client, {"prompt": "Hi"}, options, path="/ai-gateway/run?version=3")
    assert answer.status_code == 404
    assert (answer.json()["internalCode"], answer.json()["name"]) == (7002, "InferenceUpstreamError")
    assert engine.requests == []


def test_json_mode_gives_the_parsed_object(client, engine):
    engine.script = ['{"name":', ' "Ada"}']
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    inputs = {"messages": QUESTION, "response_format": {"type": "json_schema", "json_schema": schema}}
    assert bare(call(client, inputs))["response"] == {"name": "Ada"}


def test_a_stream_is_the_run_endpoints_event_stream(client):
    headers = {**RUNTIME_HEADERS, "cf-consn-model-id": TEXT_MODEL}
    body = {"inputs": {"prompt": "Capital of France?", "stream": True}, "options": {}}
    with client.stream("POST", "/run?version=3", json=body, headers=headers) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        *tokens, empty, last = json_events(events(response))
    assert "".join(event["response"] for event in tokens) == ANSWER
    assert empty == {"response": ""} and last == {"response": "", "usage": usage(5, 6)}


def test_usage_carries_the_cached_prompt_tokens(client, engine):
    engine.cached_tokens = 4
    assert bare(call(client, {"prompt": "Capital of France?"}))["usage"] == usage(5, 6, cached_tokens=4)


def test_embeddings_get_the_bare_result(client):
    result = bare(call(client, {"text": ["a cat", "a dog"]}, model=EMBEDDING_MODEL))
    assert result["shape"][0] == 2 and result["pooling"] == "mean"


def test_invalid_input_is_an_ai_error_the_runtime_can_read(client, engine):
    error = binding_error(call(client, {"prompt": ""}), 400, 5006)
    assert error["name"] == "AiError"
    assert error["message"] == "AiError: Bad input: Error: " + error["description"].removeprefix("Bad input: Error: ")
    assert error["description"].startswith("Bad input: Error: oneOf at '/' not met")
    assert engine.requests == []


@pytest.mark.parametrize(
    ("inputs", "model", "status", "code", "words"),
    [
        ({"prompt": "Hi"}, "@cf/nobody/nothing", 400, 5007, "No such model @cf/nobody/nothing"),
        ({"prompt": "Hi"}, None, 400, 5006, "cf-consn-model-id header must name the model"),
        ("not an object", TEXT_MODEL, 400, 5006, '{"inputs": {...}, "options": {...}}'),
    ],
)
def test_bad_calls_are_errors_in_the_binding_format(client, inputs, model, status, code, words):
    error = binding_error(call(client, inputs, model=model), status, code)
    assert words in error["description"]


def test_a_body_that_is_not_json_and_an_unknown_path_are_binding_errors(client):
    headers = {**RUNTIME_HEADERS, "cf-consn-model-id": TEXT_MODEL}
    assert "not valid JSON" in binding_error(client.post("/run", content=b"{", headers=headers), 400, 5006)["message"]
    assert binding_error(client.get("/run"), 400, 7000)["name"] == "InferenceUpstreamError"


def test_models_is_the_catalog_search(client):
    found = client.get("/ai-api/models/search", params={"task": "Text Embeddings"})
    assert found.status_code == 200 and [item["name"] for item in found.json()["result"]] == [EMBEDDING_MODEL]


def test_the_remote_form_answers_what_wrangler_forwards(client, engine):
    forwarded = {"x-forwarded": "http://workers-binding.ai/run?version=3"}
    response = call(client, {"messages": QUESTION}, path=PROXY, **forwarded)
    assert bare(response)["response"] == ANSWER and response.headers["cf-ai-req-id"] == engine.requests[-1]
    # Older wranglers send no X-Forwarded: a run.
    assert bare(call(client, {"prompt": "Hi"}, path=PROXY))["response"] == ANSWER
    models = client.get(PROXY, headers={"x-forwarded": "http://workers-binding.ai/ai-api/models/search?per_page=1"})
    assert models.status_code == 200 and len(models.json()["result"]) == 1
    bad_page = client.get(PROXY, headers={"x-forwarded": "http://workers-binding.ai/ai-api/models/search?page=0"})
    assert "'/page' must be a whole number from 1" in binding_error(bad_page, 400, 5006)["message"]
    elsewhere = call(client, {"prompt": "Hi"}, path=PROXY, **{"x-forwarded": "http://workers-binding.ai/elsewhere"})
    binding_error(elsewhere, 400, 7000)


def test_the_run_endpoint_keeps_its_envelope_for_a_model_named_like_the_proxy(client):
    # The remote form's path is matched before the run route; other run paths are unchanged.
    response = client.post(f"{ACCOUNT_PATH}/run/{TEXT_MODEL}", json={"prompt": "Hi"})
    assert response.json()["success"] is True and response.json()["result"]["response"] == ANSWER


def test_the_binding_routes_stay_out_of_the_openapi_document(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert not {"/run", "/ai-gateway/run", "/ai-api/models/search"} & set(paths)
    assert not any(path.endswith("/run/proxy") for path in paths)
