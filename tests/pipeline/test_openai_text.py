"""OpenAI's chat completions and completions on the fake engine: whole answers and chunk streams."""

from __future__ import annotations

import pytest

from tests.pipeline.requests import ACCOUNT_PATH, CHAT, COMPLETIONS, QUESTION, chat, complete, stream_events
from tests.support.envelopes import openai_body
from tests.support.fakes import TEXT_MODEL, FakeTokenizer, chat_prompt_ids

ANSWER = "Paris is the capital of France."
WORDS = ["Paris", " is", " the", " capital", " of", " France."]


def openai_usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


@pytest.mark.parametrize("path", [CHAT, f"{ACCOUNT_PATH}/v1/chat/completions"])
def test_chat_completion_on_both_paths(client, engine, path):
    response = client.post(path, json={"model": TEXT_MODEL, "messages": QUESTION})
    body = openai_body(response)
    request_id = engine.requests[-1]
    assert response.headers["cf-ai-req-id"] == request_id
    assert body["id"] == f"chatcmpl-{request_id}" and body["object"] == "chat.completion"
    assert body["model"] == TEXT_MODEL and isinstance(body["created"], int)
    assert body["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": ANSWER}, "logprobs": None, "finish_reason": "stop"}
    ]
    assert engine.last_prompt == chat_prompt_ids(QUESTION)
    assert body["usage"] == openai_usage(5, 6)


def test_chat_finish_reason_length_when_cut(client, engine):
    body = openai_body(chat(client, {"max_completion_tokens": 2}))
    assert body["choices"][0]["message"]["content"] == "Paris is"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 2


def test_chat_stream_chunks(client, engine):
    response, chunks = stream_events(client, CHAT, {"model": TEXT_MODEL, "messages": QUESTION})
    request_id = engine.requests[-1]
    assert response.headers["cf-ai-req-id"] == request_id
    for chunk in chunks:
        assert chunk["id"] == f"chatcmpl-{request_id}" and chunk["object"] == "chat.completion.chunk"
        assert chunk["model"] == TEXT_MODEL and "usage" not in chunk
    choices = [chunk["choices"] for chunk in chunks]
    assert all(len(c) == 1 and c[0]["index"] == 0 for c in choices)
    deltas = [c[0]["delta"] for c in choices]
    assert deltas[0] == {"role": "assistant", "content": "Paris"}
    assert deltas[1:] == [{"content": word} for word in WORDS[1:]]
    assert [c[0]["finish_reason"] for c in choices] == [None] * 5 + ["stop"]


def test_chat_stream_include_usage(client, engine):
    _, chunks = stream_events(
        client, CHAT, {"model": TEXT_MODEL, "messages": QUESTION, "stream_options": {"include_usage": True}}
    )
    *content, last = chunks
    assert len(content) == 6 and all(chunk["usage"] is None for chunk in content)
    assert "".join(chunk["choices"][0]["delta"]["content"] for chunk in content) == ANSWER
    assert last["choices"] == [] and last["usage"] == openai_usage(5, 6)


def test_chat_usage_and_the_stream_usage_chunk_report_cached_prompt_tokens(client, engine):
    engine.cached_tokens = 4
    assert openai_body(chat(client))["usage"] == openai_usage(5, 6, cached_tokens=4)
    _, chunks = stream_events(
        client, CHAT, {"model": TEXT_MODEL, "messages": QUESTION, "stream_options": {"include_usage": True}}
    )
    assert chunks[-1]["usage"] == openai_usage(5, 6, cached_tokens=4)


def test_completion_is_a_raw_prompt(client, engine):
    response = complete(client, {"prompt": "Once upon a time"})
    body = openai_body(response)
    request_id = engine.requests[-1]
    assert body["id"] == f"cmpl-{request_id}" and body["object"] == "text_completion"
    assert response.headers["cf-ai-req-id"] == request_id
    assert body["choices"] == [{"index": 0, "text": ANSWER, "logprobs": None, "finish_reason": "stop"}]
    # No chat template: the prompt as it is, with the tokenizer's BOS.
    assert engine.last_prompt == FakeTokenizer().encode("Once upon a time")
    assert body["usage"] == openai_usage(5, 6)


def test_completion_stream(client, engine):
    _, chunks = stream_events(
        client,
        COMPLETIONS,
        {"model": TEXT_MODEL, "prompt": "Once upon a time", "max_tokens": 4, "stream_options": {"include_usage": True}},
    )
    *content, last = chunks
    request_id = engine.requests[-1]
    assert all(chunk["id"] == f"cmpl-{request_id}" and chunk["object"] == "text_completion" for chunk in chunks)
    assert [chunk["choices"][0]["text"] for chunk in content] == WORDS[:4]
    assert [chunk["choices"][0]["finish_reason"] for chunk in content] == [None, None, None, "length"]
    assert last["choices"] == [] and last["usage"] == openai_usage(5, 4)
