"""Every request's record feeds the metrics: outcomes by model, protocol, status and code; token counts.

prometheus_client's registry is process-wide: each test compares a scrape after its requests with
one before them.
"""

from __future__ import annotations

import pytest

from server.engine.types import EngineRejected
from tests.pipeline.requests import (
    PROTOCOL_LABELS,
    QUESTION,
    TEXT_PROTOCOLS,
    ask,
    protocol_path,
    request_body,
    run,
    stream_events,
)
from tests.support.envelopes import openai_body, result
from tests.support.fakes import TEXT_MODEL, chat_prompt_ids
from tests.support.metrics import scrape
from tests.support.repo import STAND_IN
from tests.support.waiting import wait_for

OK = {"lora": "none", "status": "200", "code": "none"}


@pytest.mark.parametrize("protocol", TEXT_PROTOCOLS)
def test_a_sync_answer_is_counted_with_its_tokens(client, engine, protocol):
    before = scrape(client)
    response = ask(client, protocol)
    assert response.status_code == 200, response.text
    counted = scrape(client) - before
    label = PROTOCOL_LABELS[protocol]
    assert counted.value("wai_requests_total", model=TEXT_MODEL, protocol=label, **OK) == 1
    assert counted.value("wai_requests_total") == 1  # nothing else was counted
    assert counted.value("wai_generation_tokens_total", model=TEXT_MODEL, lora="none") == 6
    assert counted.value("wai_prompt_tokens_total", model=TEXT_MODEL, lora="none") == len(engine.last_prompt)
    assert counted.value("wai_request_duration_seconds_count", model=TEXT_MODEL) == 1
    assert counted.value("wai_time_to_first_token_seconds_count", model=TEXT_MODEL) == 1
    assert counted.value("wai_inter_token_latency_seconds_count", model=TEXT_MODEL) == 1


def test_a_stream_is_counted_like_a_sync_answer(client, engine):
    before = scrape(client)
    stream_events(client, protocol_path("chat"), request_body("chat", {"max_tokens": 4}))
    # A stream's record is finished just after its last byte went out, so the client can scrape first.
    wait_for(
        lambda: (scrape(client) - before).value("wai_requests_total", model=TEXT_MODEL, protocol="openai", **OK) == 1,
        "the stream to be counted",
        timeout=5,
    )
    counted = scrape(client) - before
    assert counted.value("wai_generation_tokens_total", model=TEXT_MODEL) == 4
    assert counted.value("wai_prompt_tokens_total", model=TEXT_MODEL) == len(chat_prompt_ids(QUESTION))


def test_every_choice_is_counted(client, engine):
    before = scrape(client)
    body = openai_body(ask(client, "chat", {"n": 3, "temperature": 0, "max_tokens": 2}))
    counted = scrape(client) - before
    assert body["usage"]["completion_tokens"] == 6
    assert counted.value("wai_generation_tokens_total", model=TEXT_MODEL) == 6


def test_a_stand_in_counts_under_the_real_model(client, engine):
    before = scrape(client)
    result(run(client, {"prompt": "Hi"}, model=STAND_IN))
    counted = scrape(client) - before
    assert counted.value("wai_requests_total", model=TEXT_MODEL, protocol="workers_ai", **OK) == 1
    assert counted.value("wai_requests_total", model=STAND_IN) == 0


def test_failures_are_counted_with_their_code(client, engine):
    before = scrape(client)
    engine.fail(EngineRejected, "no")
    assert ask(client, "run").status_code == 400
    assert ask(client, "chat", {"stream": True}).status_code == 400
    assert ask(client, "chat", model="@cf/test/nope").status_code == 404  # OpenAI's model_not_found
    counted = scrape(client) - before
    for label in ("workers_ai", "openai"):
        assert counted.value("wai_requests_total", model=TEXT_MODEL, protocol=label, status="400", code="5006") == 1
    # Before a model is resolved, the request counts under model "none".
    assert counted.value("wai_requests_total", model="none", protocol="openai", status="404", code="5007") == 1
    assert counted.value("wai_generation_tokens_total") == 0
    assert scrape(client).value("wai_requests_in_flight", model=TEXT_MODEL) == 0
