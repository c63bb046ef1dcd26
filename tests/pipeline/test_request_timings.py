"""`metrics.per_request`: the request's own timings on OpenAI answers, whole and on the stream's usage
chunk, consistent with each other and with what the fake engine was told to take; off by default."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.fakes import TEXT_MODEL, fake_settings
from tests.support.servers import serve_app
from tests.support.sse import events, json_events

DELAY_S = 0.02  # the fake engine's time per token
CHAT = {"model": TEXT_MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}
FIELDS = {"time_to_first_token_ms", "queue_time_ms", "generation_time_ms", "mean_itl_ms", "tokens_per_second"}


@pytest.fixture(scope="module")
def timed(tmp_path_factory):
    with serve_app(fake_settings(tmp_path_factory.mktemp("timed"), metrics={"per_request": True})) as served:
        yield served


def consistent(timings: dict, tokens: int) -> None:
    assert set(timings) == FIELDS
    assert timings["time_to_first_token_ms"] >= DELAY_S * 1000 * 0.9  # the first token took one delay
    assert timings["generation_time_ms"] >= DELAY_S * 1000 * (tokens - 1) * 0.9
    assert timings["mean_itl_ms"] == pytest.approx(timings["generation_time_ms"] / (tokens - 1), rel=0.01)
    e2e_s = (timings["time_to_first_token_ms"] + timings["generation_time_ms"]) / 1000
    assert timings["tokens_per_second"] == pytest.approx(tokens / e2e_s, rel=0.01)
    assert timings["queue_time_ms"] is None  # the fake engine reports no queue time


def test_a_whole_answer_carries_its_timings(timed):
    timed.text_engine.delay = DELAY_S
    with timed.client() as client:
        body = client.post("/v1/chat/completions", json=CHAT).json()
        consistent(body["metrics"], body["usage"]["completion_tokens"])
        completion = client.post("/v1/completions", json={"model": TEXT_MODEL, "prompt": "Hi", "max_tokens": 3}).json()
        consistent(completion["metrics"], 3)


def test_the_streams_usage_chunk_carries_them(timed):
    timed.text_engine.delay = DELAY_S
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    with timed.client() as client, client.stream("POST", "/v1/chat/completions", json=body) as response:
        chunks = json_events(events(response))
    assert all("metrics" not in chunk for chunk in chunks[:-1])
    consistent(chunks[-1]["metrics"], chunks[-1]["usage"]["completion_tokens"])


def test_off_by_default_the_answer_is_openais_shape_exactly(client: httpx.Client):
    body = client.post("/v1/chat/completions", json=CHAT).json()
    assert set(body) == {"id", "object", "created", "model", "choices", "usage"}, json.dumps(body)
