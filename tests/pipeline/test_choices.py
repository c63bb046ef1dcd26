"""n > 1 on the OpenAI endpoints: one index per choice; greedy choices decoded once and repeated."""

from __future__ import annotations

from tests.pipeline.requests import CHAT, COMPLETIONS, QUESTION, chat, complete, stream_events
from tests.support.envelopes import openai_body
from tests.support.fakes import TEXT_MODEL


def joined_by_index(chunks: list[dict], field: str) -> dict[int, str]:
    texts: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            piece = choice["delta"].get("content", "") if field == "delta" else choice["text"]
            texts[choice["index"]] = texts.get(choice["index"], "") + piece
    return texts


def test_sampled_choices_each_have_their_index(client, engine):
    body = openai_body(chat(client, {"n": 3, "temperature": 1.0}))
    assert engine.last_params.n == 3
    assert [choice["index"] for choice in body["choices"]] == [0, 1, 2]
    assert [choice["message"]["content"] for choice in body["choices"]] == [engine.text(i) for i in range(3)]
    assert len({choice["message"]["content"] for choice in body["choices"]}) == 3
    assert body["usage"]["completion_tokens"] == 3 * 6


def test_greedy_choices_are_decoded_once_and_repeated(client, engine):
    body = openai_body(chat(client, {"n": 3, "temperature": 0}))
    assert engine.last_params.n == 1 and engine.last_params.sampling["temperature"] == 0
    assert [choice["index"] for choice in body["choices"]] == [0, 1, 2]
    assert [choice["message"]["content"] for choice in body["choices"]] == [engine.text(0)] * 3
    assert body["usage"]["completion_tokens"] == 3 * 6  # usage counts every choice


def test_streamed_greedy_choices_repeat_under_every_index(client, engine):
    _, chunks = stream_events(
        client,
        CHAT,
        {
            "model": TEXT_MODEL,
            "messages": QUESTION,
            "n": 3,
            "temperature": 0,
            "stream_options": {"include_usage": True},
        },
    )
    assert engine.last_params.n == 1
    assert joined_by_index(chunks[:-1], "delta") == {index: engine.text(0) for index in range(3)}
    finishes = [c["index"] for chunk in chunks for c in chunk["choices"] if c["finish_reason"] == "stop"]
    assert sorted(finishes) == [0, 1, 2]
    assert chunks[-1]["usage"]["completion_tokens"] == 3 * 6


def test_completions_take_n_too(client, engine):
    body = openai_body(complete(client, {"n": 2, "temperature": 0.7, "max_tokens": 3}))
    assert engine.last_params.n == 2
    assert [(c["index"], c["text"]) for c in body["choices"]] == [(0, "Paris is the"), (1, "Paris1 is1 the1")]
    _, chunks = stream_events(client, COMPLETIONS, {"model": TEXT_MODEL, "prompt": "Go", "n": 2, "max_tokens": 3})
    assert joined_by_index(chunks, "text") == {0: "Paris is the", 1: "Paris1 is1 the1"}
