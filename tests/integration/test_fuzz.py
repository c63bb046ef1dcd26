"""Schemathesis over /openapi.json against the real server on the real engine (a short run; the fake-engine
run is tests/fuzz/test_schemathesis.py): no 5xx, every error in its protocol's envelope, no hang.

Generation stays short: valid cases ask for at most MAX_TOKENS tokens and N_MAX choices, a body without
max_tokens gets MAX_TOKENS, and every request carries `X-Request-Timeout`, so that an invalid case the
server accepts ends with 408 / 3007 instead of generating for long. The fine-tune operations that
write (create, upload, delete) are left out here: the session's server shares its fine-tune store with
tests/integration/test_lora.py, which counts what is in it; the fake-engine run covers them.
"""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, settings

from tests.support import api_fuzz
from tests.support.repo import DEFAULT_CONFIG, REAL_MODEL, STAND_IN
from tests.support.servers import RunningServer

SUITE = "real engine"
MAX_TOKENS = 4
N_MAX = 2
REQUEST_TIMEOUT_S = 8  # below api_fuzz.RESPONSE_TIME_LIMIT_S: the server answers 408 before the check fails
EMBEDDING_MODELS = [
    m["name"] for m in yaml.safe_load(DEFAULT_CONFIG.read_text())["models"] if m.get("task") == "text-embeddings"
]
WRITES = {
    ("POST", "/finetunes"),
    ("DELETE", "/finetunes/{id_or_name}"),
    ("POST", "/finetunes/{id_or_name}/finetune-assets"),
}


def bounded(document: dict[str, Any]) -> dict[str, Any]:
    """Valid cases ask for little generation: max_tokens and n bounded in every text request schema."""
    schemas = document["components"]["schemas"]
    for form in schemas["TextGenerationInput"]["oneOf"]:
        form["properties"]["max_tokens"]["maximum"] = MAX_TOKENS
    for name in ("ChatCompletionRequest", "CompletionRequest"):
        properties = schemas[name]["properties"]
        for field, bound in (("max_tokens", MAX_TOKENS), ("max_completion_tokens", MAX_TOKENS), ("n", N_MAX)):
            properties[field]["anyOf"][0]["maximum"] = bound
    return document


DOCUMENT = api_fuzz.app_document()
schema = api_fuzz.load(bounded(api_fuzz.fuzz_document(DOCUMENT, [STAND_IN, REAL_MODEL], EMBEDDING_MODELS)))
for method, path in WRITES:
    schema = schema.exclude(method=method, path=f"/client/v4/accounts/{{account_id}}/ai{path}")


def test_the_fuzzed_document_is_the_one_the_real_server_serves(client):
    assert client.get("/openapi.json").json() == DOCUMENT


def is_text_generation(path: str) -> bool:
    return path.endswith(("/chat/completions", "/completions")) or "/run/" in path


@schema.parametrize()
@settings(deadline=None, database=None, derandomize=not api_fuzz.RANDOM, suppress_health_check=list(HealthCheck))
def test_the_real_server_as_documented(case, server: RunningServer):
    if is_text_generation(case.operation.path) and isinstance(case.body, dict):
        if "max_tokens" not in case.body and "max_completion_tokens" not in case.body:
            case.body["max_tokens"] = MAX_TOKENS
    headers = {"Authorization": f"Bearer {server.api_key}", "X-Request-Timeout": str(REQUEST_TIMEOUT_S)}
    api_fuzz.call_and_check(case, SUITE, server.base_url, headers=headers)
