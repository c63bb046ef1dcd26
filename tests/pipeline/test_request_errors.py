"""Requests refused before the engine runs them: the context window, unknown models, bad conversations."""

from __future__ import annotations

import pytest

from tests.pipeline.requests import EMBEDDINGS, TEXT_PROTOCOLS, ask, chat, run
from tests.support.envelopes import openai_error, workers_ai_error
from tests.support.fakes import CONTEXT_WINDOW, EMBEDDING_MODEL, TEXT_MODEL


def test_a_prompt_over_the_context_window_is_413_5021(client, engine):
    # 55 words between the template's two role tokens: 57 prompt tokens + 8 default max_tokens.
    response = run(client, {"prompt": " ".join(["word"] * 55)})
    assert workers_ai_error(response, 413, 5021) == (
        f"AiError: The estimated number of input and maximum output tokens (65) exceeded this model context "
        f"window limit ({CONTEXT_WINDOW})"
    )
    assert engine.requests == []
    # One word less fits exactly: 56 + 8 = 64.
    assert run(client, {"prompt": " ".join(["word"] * 54)}).status_code == 200


def test_max_tokens_over_the_context_window_is_413_5021_on_the_run_endpoint(client, engine):
    message = workers_ai_error(ask(client, "run", {"max_tokens": CONTEXT_WINDOW}), 413, 5021)
    assert f"limit ({CONTEXT_WINDOW})" in message
    assert engine.requests == []


@pytest.mark.parametrize(("protocol", "param"), [("chat", "messages"), ("completions", "prompt")])
def test_max_tokens_over_the_context_window_is_openais_context_length_exceeded(client, engine, protocol, param):
    # As OpenAI and vLLM answer, in the words LiteLLM looks for; 5 prompt tokens + 64 = 69.
    error = openai_error(ask(client, protocol, {"max_tokens": CONTEXT_WINDOW}), 400, "context_length_exceeded")
    assert error["message"] == (
        f"This model's maximum context length is {CONTEXT_WINDOW} tokens. However, you requested 69 tokens "
        f"(5 in the {param}, 64 in the completion). Please reduce the length of the {param} or completion."
    )
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert engine.requests == []


@pytest.mark.parametrize("protocol", TEXT_PROTOCOLS)
def test_an_unknown_model_is_400_5007_or_openais_404(client, engine, protocol):
    response = ask(client, protocol, model="@cf/test/nope")
    if protocol == "run":
        assert workers_ai_error(response, 400, 5007) == "No such model @cf/test/nope or task"
    else:
        error = openai_error(response, 404, "model_not_found")
        assert error["message"] == "No such model @cf/test/nope or task" and error["type"] == "invalid_request_error"
    assert engine.requests == []


def test_a_model_of_another_task_is_openais_404(client, engine, embedder):
    assert openai_error(chat(client, model=EMBEDDING_MODEL), 404, "model_not_found")["param"] == "model"
    response = client.post(EMBEDDINGS, json={"model": TEXT_MODEL, "input": "hello"})
    assert openai_error(response, 404, "model_not_found")["message"] == f"No such model {TEXT_MODEL} or task"
    assert engine.requests == [] and embedder.requests == []


def test_a_conversation_the_template_rejects_is_400_5006(client, engine):
    message = workers_ai_error(run(client, {"messages": []}), 400, 5006)
    assert message.startswith("AiError: Bad input: Error: the chat template rejected the messages:")
    assert engine.requests == []
