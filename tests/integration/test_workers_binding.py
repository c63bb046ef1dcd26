"""A Worker on Cloudflare's own runtime (workerd, from the npm registry) whose AI binding is wai.

tests/workers/wai.capnp wires the binding's fetcher to the session's real server, its API key injected
as the README shows; tests/workers/worker.js calls `env.AI.run` and answers with what it got back.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest

from tests.support.ai_gateways import new_gateway
from tests.support.ports import free_port
from tests.support.repo import ROOT, STAND_IN
from tests.support.servers import running_command

WORKERS = ROOT / "tests" / "workers"
WORKERD = WORKERS / "node_modules" / ".bin" / "workerd"
EMBEDDING_MODEL = "@cf/sentence-transformers/all-minilm-l6-v2"
KEY_LINE = 'value = "Bearer YOUR_WAI_API_KEY"'


@pytest.fixture(scope="module")
def worker(server, tmp_path_factory) -> Iterator[str]:
    """The Worker's URL, on workerd with the session server's address and key in its config."""
    assert WORKERD.exists(), "workerd is missing: run scripts/install-workerd.sh (make test does)"
    folder = tmp_path_factory.mktemp("worker")
    config = (WORKERS / "wai.capnp").read_text()
    assert KEY_LINE in config
    (folder / "wai.capnp").write_text(config.replace(KEY_LINE, f'value = "Bearer {server.api_key}"'))
    shutil.copy(WORKERS / "worker.js", folder / "worker.js")
    port, wai_address = free_port(), server.base_url.removeprefix("http://")
    command = [
        str(WORKERD),
        "serve",
        "wai.capnp",
        f"--socket-addr=http=127.0.0.1:{port}",
        f"--external-addr=wai={wai_address}",
    ]
    # Ready once it listens: the Worker answers / with whatever status its request brings.
    with running_command(
        command, f"http://127.0.0.1:{port}", "/", folder / "workerd.log", ready=lambda status: True, cwd=folder
    ) as workerd:
        yield workerd.url


def ai_run(worker: str, inputs: dict[str, Any], options: dict[str, Any] | None = None, model: str = STAND_IN) -> dict:
    """What `env.AI.run(model, inputs, options)` gave the Worker: result, stream or error, and the
    binding's record of the call (lastRequestId, lastRequestHttpStatusCode, ...)."""
    response = httpx.post(worker, json={"model": model, "inputs": inputs, "options": options or {}}, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_prompt(worker):
    got = ai_run(worker, {"prompt": "What is the capital of France?", "max_tokens": 16})
    assert got["result"]["response"].strip(), got
    usage = got["result"]["usage"]
    assert 1 <= usage["completion_tokens"] <= 16
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert got["result"]["tool_calls"] == []
    assert got["lastRequestId"] and got["lastRequestHttpStatusCode"] == 200


def test_messages_with_run_options(worker):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fruit."}]
    got = ai_run(worker, {"messages": messages, "max_tokens": 8, "seed": 7}, {"rejectIfBusy": False})
    assert got["result"]["response"].strip() and got["result"]["usage"]["completion_tokens"] <= 8


def test_a_stream_reaches_the_worker_as_the_event_stream(worker):
    got = ai_run(worker, {"prompt": "Count to five.", "max_tokens": 12, "stream": True})
    payloads = [line.removeprefix("data: ") for line in got["stream"].split("\n\n") if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]"
    events = [json.loads(payload) for payload in payloads[:-1]]
    assert "".join(event["response"] for event in events).strip()
    assert events[-1]["usage"]["completion_tokens"] >= 1


def test_json_mode_gives_the_worker_an_object_that_fits_the_schema(worker):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"],
    }
    inputs = {
        "messages": [{"role": "user", "content": "Name a city and its country, as JSON."}],
        "response_format": {"type": "json_schema", "json_schema": schema},
        "max_tokens": 60,
        "seed": 3,
    }
    got = ai_run(worker, inputs)
    jsonschema.validate(got["result"]["response"], schema)


def test_embeddings(worker):
    got = ai_run(worker, {"text": ["a cat", "a dog"]}, model=EMBEDDING_MODEL)
    assert got["result"]["shape"] == [2, 384] and len(got["result"]["data"]) == 2


def test_models_is_the_catalog(worker):
    response = httpx.post(worker, json={"models": {"task": "Text Embeddings"}}, timeout=60)
    assert [item["name"] for item in response.json()["result"]] == [EMBEDDING_MODEL]


def test_return_raw_response_gives_the_worker_wais_answer(worker):
    got = ai_run(worker, {"prompt": "Hi", "max_tokens": 4}, {"returnRawResponse": True})
    assert got["raw"]["status"] == 200 and got["raw"]["contentType"] == "application/json"
    assert got["raw"]["body"]["usage"]["completion_tokens"] >= 1


def test_invalid_input_is_the_runtimes_error_with_wais_code_and_message(worker):
    got = ai_run(worker, {"prompt": ""})
    assert got["error"]["name"] == "AiError"
    assert got["error"]["message"].startswith("5006: Bad input: Error: oneOf at '/' not met, 0 matches:")
    assert "Length of '/prompt' must be >= 1 not met" in got["error"]["message"]
    assert got["lastRequestHttpStatusCode"] == 400 and got["lastRequestInternalStatusCode"] == 5006
    assert got["lastRequestId"]


def test_other_errors_reach_the_worker_with_their_codes(worker):
    unknown = ai_run(worker, {"prompt": "Hi"}, model="@cf/nobody/nothing")
    assert unknown["error"]["name"] == "InferenceUpstreamError"
    assert unknown["error"]["message"] == "5007: No such model @cf/nobody/nothing or task"
    too_long = ai_run(worker, {"prompt": "Hi", "max_tokens": 7968})
    assert too_long["error"]["message"].startswith("5021: The estimated number of input and maximum output tokens")
    assert too_long["lastRequestHttpStatusCode"] == 413


def test_the_gateway_option_caches_logs_and_the_worker_reads_and_patches_its_log(worker, server):
    with server.client() as client:
        gateway_id = new_gateway(client, "binding")
    inputs = {"prompt": f"Name a colour. {gateway_id}", "max_tokens": 6}
    options = {"gateway": {"id": gateway_id, "cacheTtl": 300, "metadata": {"team": "binding"}}}
    first, again = ai_run(worker, inputs, options), ai_run(worker, inputs, options)
    assert first["result"]["response"] and again["result"] == first["result"], (first, again)
    assert first["aiGatewayLogId"] and again["aiGatewayLogId"] != first["aiGatewayLogId"]

    read = httpx.post(
        worker, json={"gatewayLog": {"gateway": gateway_id, "logId": first["aiGatewayLogId"]}}, timeout=60
    )
    log = read.json()["log"]
    assert (log["id"], log["model"], log["cached"], log["success"]) == (first["aiGatewayLogId"], STAND_IN, False, True)
    assert log["tokens_out"] == first["result"]["usage"]["completion_tokens"]
    patch = {"gateway": gateway_id, "logId": again["aiGatewayLogId"], "patch": {"feedback": 1, "score": 90}}
    patched = httpx.post(worker, json={"gatewayLog": patch}, timeout=60).json()["log"]
    assert patched["cached"] is True and patched["feedback"] == 1 and patched["score"] == 90
    missing = httpx.post(worker, json={"gatewayLog": {"gateway": gateway_id, "logId": "01NOSUCHLOG"}}, timeout=60)
    assert missing.json()["error"]["name"] == "AiGatewayLogNotFound"


def test_without_the_key_the_binding_is_refused(server):
    # What a Worker gets when its config injects no key (or a wrong one) into a server with keys.
    headers = {"cf-consn-model-id": STAND_IN, "cf-consn-sdk-version": "2.0.0", "Authorization": "Bearer wrong"}
    response = httpx.post(f"{server.base_url}/run?version=3", json={"inputs": {"prompt": "Hi"}}, headers=headers)
    assert response.status_code == 401
    assert response.json() == {
        "internalCode": 10000,
        "message": "Authentication error",
        "name": "InferenceUpstreamError",
        "description": "Authentication error",
    }


def test_wranglers_remote_form(server):
    # What `wrangler dev` forwards: the binding's call, its URL in X-Forwarded, the API token as the key.
    headers = {
        "Authorization": f"Bearer {server.api_key}",
        "cf-consn-model-id": STAND_IN,
        "cf-consn-sdk-version": "2.0.0",
        "X-Forwarded": "http://workers-binding.ai/run?version=3",
    }
    body = {"inputs": {"prompt": "Hi", "max_tokens": 4}, "options": {}}
    response = httpx.post(server.run_url("proxy"), json=body, headers=headers)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json", response.text
    assert response.json()["usage"]["completion_tokens"] >= 1 and response.headers["cf-ai-req-id"]
