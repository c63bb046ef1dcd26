"""The fuzz checks can fail: a 5xx, a hang and an error outside its protocol's envelope are each caught."""

from __future__ import annotations

import json

import pytest

from tests.support import api_fuzz
from tests.support.envelopes import error_problems, protocol_of
from tests.support.fakes import EMBEDDING_MODEL, TEXT_MODEL
from tests.support.servers import ServedApp

RUN = "/client/v4/accounts/{account_id}/ai/run/{model}"
SCHEMA = api_fuzz.load(api_fuzz.fuzz_document(api_fuzz.app_document(), [TEXT_MODEL], [EMBEDDING_MODEL]))

WORKERS_AI_ERROR = {"result": {}, "success": False, "errors": [{"code": 5006, "message": "bad"}], "messages": []}
OPENAI_ERROR = {"error": {"message": "bad", "type": "invalid_request_error", "param": None, "code": "5006"}}


def run_case():
    return SCHEMA[RUN]["POST"].Case(
        path_parameters={"account_id": "a", "model": TEXT_MODEL}, body={"prompt": "hi"}, media_type="application/json"
    )


def test_a_good_answer_passes(fuzz_app: ServedApp):
    assert api_fuzz.call_and_check(run_case(), None, fuzz_app.base_url).status_code == 200


def failure_of(fuzz_app: ServedApp) -> str:
    """What call_and_check raised (schemathesis raises an exception group, which pytest.raises passes on)."""
    try:
        api_fuzz.call_and_check(run_case(), None, fuzz_app.base_url)
    except BaseException as exc:  # whatever it is, it must say why
        return f"{type(exc).__name__}: {exc}"
    raise AssertionError("the check passed")


def test_a_server_error_fails(fuzz_app: ServedApp):
    fuzz_app.text_engine.fail(RuntimeError)
    assert "Server error" in failure_of(fuzz_app)


def test_a_hang_fails(fuzz_app: ServedApp, monkeypatch):
    monkeypatch.setattr(api_fuzz, "RESPONSE_TIME_LIMIT_S", 0.3)
    fuzz_app.text_engine.delay = 0.2  # six words: 1.2 s
    assert "timed out" in failure_of(fuzz_app).lower()


@pytest.mark.parametrize(
    ("path", "protocol"),
    [
        ("/v1/chat/completions", "openai"),
        ("/v1/messages", "anthropic"),
        ("/client/v4/accounts/a/ai/v1/messages/count_tokens", "anthropic"),
        ("/v1/messages/other", "openai"),
        ("/client/v4/accounts/a/ai/v1/embeddings", "openai"),
        ("/client/v4/accounts/{account_id}/ai/v1/models", "openai"),
        ("/client/v4/accounts/a%2Fb/ai/v1/models", "workers_ai"),  # /accounts/a/b/...: no OpenAI route
        ("/client/v4/accounts/a/ai/run/@cf/x/y", "workers_ai"),
        ("/client/v4/accounts/a/ai/run/x/ai/v1/y", "workers_ai"),
        ("/client/v4/accounts/{account_id}/ai/run/{model}", "workers_ai"),
        ("/client/v4/accounts/a/ai/finetunes", "workers_ai"),
        ("/healthz", None),
        ("/metrics", None),
    ],
)
def test_paths_are_told_apart(path, protocol):
    assert protocol_of(path) == protocol


def problems(path: str, body: object, status: int = 400, content_type: str = "application/json") -> list[str]:
    return error_problems(path, status, content_type, json.dumps(body).encode())


def test_the_right_envelopes_pass():
    assert problems("/client/v4/accounts/a/ai/run/m", WORKERS_AI_ERROR) == []
    assert problems("/v1/chat/completions", OPENAI_ERROR) == []
    assert problems("/client/v4/accounts/a/ai/v1/chat/completions", OPENAI_ERROR) == []


@pytest.mark.parametrize(
    "body",
    [
        OPENAI_ERROR,
        {**WORKERS_AI_ERROR, "success": True},
        {**WORKERS_AI_ERROR, "result": None},
        {**WORKERS_AI_ERROR, "errors": []},
        {**WORKERS_AI_ERROR, "errors": [{"code": "5006", "message": "bad"}]},
        {**WORKERS_AI_ERROR, "errors": [{"code": 5006}]},
        {**WORKERS_AI_ERROR, "messages": ["x"]},
        {**WORKERS_AI_ERROR, "extra": 1},
        {"detail": "Not Found"},  # FastAPI's own
    ],
)
def test_a_wrong_workers_ai_envelope_fails(body):
    assert problems("/client/v4/accounts/a/ai/run/m", body)


@pytest.mark.parametrize(
    "body",
    [
        WORKERS_AI_ERROR,
        {"error": {**OPENAI_ERROR["error"], "code": 5006}},
        {"error": {"message": "bad", "type": "x", "code": "5006"}},
        {"error": {**OPENAI_ERROR["error"], "param": 3}},
        {**OPENAI_ERROR, "success": False},
        {"error": "bad"},
    ],
)
def test_a_wrong_openai_error_fails(body):
    assert problems("/v1/chat/completions", body)


def test_an_error_that_is_not_json_fails():
    assert error_problems("/v1/models", 500, "text/plain", b"Internal Server Error")
    assert error_problems("/client/v4/accounts/a/ai/finetunes", 400, "application/json", b"{")
