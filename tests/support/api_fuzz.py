"""Schemathesis over wai's own /openapi.json, with the checks every answer must pass.

Checks: no 5xx; every error in its protocol's envelope (tests/support/envelopes.py); every answer within
RESPONSE_TIME_LIMIT_S (the request timeout is the same, so a hang fails instead of waiting). Cases come
from the document as served, in both generation modes (valid and invalid inputs), with `model`
narrowed to the served names in valid cases so that they reach the engines.
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any

import schemathesis
from schemathesis.checks import not_a_server_error

from server.app import create_app
from tests.support.envelopes import error_problems
from tests.support.fakes import FakeEngines, fake_settings
from tests.support.fuzz_tally import TALLY

# Cases per operation: a few in the fast tier; `make fuzz` sets more.
EXAMPLES = int(os.environ.get("WAI_FUZZ_EXAMPLES", "6"))
# The fast tier sends the same cases every run (a failure there is never luck); `make fuzz` draws new ones.
RANDOM = os.environ.get("WAI_FUZZ_RANDOM") == "1"
RESPONSE_TIME_LIMIT_S = 10.0
NOT_FUZZED = ("/metrics",)  # Prometheus text: no JSON, no envelope


def app_document() -> dict[str, Any]:
    """The document the app serves at /openapi.json, built in process (no server, no engine started):
    schemathesis needs it when the tests are collected. The tests check that the served one is equal."""
    with tempfile.TemporaryDirectory() as root:
        return create_app(fake_settings(Path(root)), FakeEngines()).openapi()


def fuzz_document(document: dict[str, Any], text_models: list[str], embedding_models: list[str]) -> dict[str, Any]:
    """The served document with every `model` (path, query and body fields) narrowed to the served names
    of the right task, so that valid cases reach the engines; invalid cases still try other names
    (schemathesis's negative mode breaks the enum)."""
    document = copy.deepcopy(document)
    for operations in document["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "model":
                    parameter["schema"] = {"type": "string", "enum": text_models + embedding_models}
    schemas = document["components"]["schemas"]
    for name, models in {
        "ChatCompletionRequest": text_models,
        "CompletionRequest": text_models,
        "EmbeddingsRequest": embedding_models,
        "FinetuneCreate": text_models,
    }.items():
        schemas[name]["properties"]["model"] = {"type": "string", "enum": models}
    return document


def load(document: dict[str, Any], examples: int = EXAMPLES) -> Any:
    config = schemathesis.Config.from_dict(
        {
            "request-timeout": RESPONSE_TIME_LIMIT_S,
            "generation": {"mode": "all", "max-examples": examples},
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": False},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": False},
            },
            "checks": {"max_response_time": RESPONSE_TIME_LIMIT_S},
        }
    )
    schema = schemathesis.openapi.from_dict(document, config=config)
    for path in NOT_FUZZED:
        schema = schema.exclude(path=path)
    return schema


def error_envelope(ctx: Any, response: Any, case: Any) -> None:
    """A check: every 4xx and 5xx answer is in the envelope of the protocol of the operation's path (its
    template: a path parameter's value, whatever it holds, does not move a route to another protocol)."""
    if response.status_code >= 400:
        content_type = (response.headers.get("content-type") or [""])[0]
        problems = error_problems(case.operation.path, response.status_code, content_type, response.content)
        assert not problems, "\n".join(problems)


def answered_in_time(ctx: Any, response: Any, case: Any) -> None:
    assert response.elapsed < RESPONSE_TIME_LIMIT_S, f"answered in {response.elapsed:.1f} s"


CHECKS = [not_a_server_error, error_envelope, answered_in_time]


def call_and_check(case: Any, suite: str | None, base_url: str, headers: dict[str, str] | None = None) -> Any:
    """Send the case (no retries: a hang is a failure), run the checks, and count it under `suite`
    (None: not counted, for the tests of the checks themselves)."""
    operation = f"{case.operation.method.upper()} {case.operation.path}"
    try:
        response = case.call(base_url=base_url, headers=headers, timeout=RESPONSE_TIME_LIMIT_S)
    except Exception as exc:  # a timeout or a dropped connection: as much a failure as a 5xx
        if suite:
            TALLY.case(suite, operation, 0)
            TALLY.case_failed(suite, operation, f"no answer: {exc!r}"[:300])
        raise
    if suite:
        TALLY.case(suite, operation, response.status_code)
    try:
        case.validate_response(response, checks=CHECKS)
    except BaseException as exc:  # schemathesis raises its failures as a BaseExceptionGroup
        if suite:
            TALLY.case_failed(suite, operation, " ".join(str(exc).split())[:300])
        raise
    return response
