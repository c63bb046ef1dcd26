"""The pipeline tier's requests: paths, bodies and the same small request in every text protocol."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.envelopes import openai_error, workers_ai_error
from tests.support.fakes import TEXT_MODEL
from tests.support.sse import events, json_events

ACCOUNT_PATH = "/client/v4/accounts/test-account/ai"
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
QUESTION = [{"role": "user", "content": "Capital of France?"}]


# --- requests -------------------------------------------------------------------------------


def run_path(model: str = TEXT_MODEL) -> str:
    return f"{ACCOUNT_PATH}/run/{model}"


def run(client: httpx.Client, body: dict[str, Any], model: str = TEXT_MODEL, **options: Any) -> httpx.Response:
    return client.post(run_path(model), json=body, **options)


def stream_events(client: httpx.Client, path: str, body: dict[str, Any]) -> tuple[httpx.Response, list[dict]]:
    """POST a streaming request; the response (headers) and its JSON events, [DONE] checked last."""
    with client.stream("POST", path, json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return response, json_events(events(response))


# --- the same request in every text protocol ---------------------------------------------------

TEXT_PROTOCOLS = ["run", "chat", "completions"]
PROTOCOL_LABELS = {"run": "workers_ai", "chat": "openai", "completions": "openai"}


def request_body(protocol: str, body: dict[str, Any] | None = None, model: str = TEXT_MODEL) -> dict[str, Any]:
    """A small text request's body in `protocol`: the run endpoint, chat completions or completions."""
    base = {
        "run": {"prompt": "Hi"},
        "chat": {"model": model, "messages": QUESTION},
        "completions": {"model": model, "prompt": "Once upon a time"},
    }[protocol]
    return {**base, **(body or {})}


def protocol_path(protocol: str, model: str = TEXT_MODEL) -> str:
    return {"run": run_path(model), "chat": CHAT, "completions": COMPLETIONS}[protocol]


def ask(
    client: httpx.Client, protocol: str, body: dict[str, Any] | None = None, model: str = TEXT_MODEL, **options: Any
) -> httpx.Response:
    return client.post(protocol_path(protocol, model), json=request_body(protocol, body, model), **options)


def chat(
    client: httpx.Client, body: dict[str, Any] | None = None, model: str = TEXT_MODEL, **options: Any
) -> httpx.Response:
    return ask(client, "chat", body, model, **options)


def complete(client: httpx.Client, body: dict[str, Any] | None = None, model: str = TEXT_MODEL) -> httpx.Response:
    return ask(client, "completions", body, model)


def error_message(response: httpx.Response, protocol: str, status: int, code: int) -> str:
    """The error's message, after checking status, code and shape in that protocol's format."""
    if protocol == "run":
        return workers_ai_error(response, status, code)
    return openai_error(response, status, code)["message"]
