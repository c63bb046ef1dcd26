"""Deadlines: a request past its time limit ends with 408 / 3007 (a stream: an error event, then
[DONE]) and its engine request is aborted; a client may ask for less time, never more."""

from __future__ import annotations

import pytest

from tests.pipeline.requests import TEXT_PROTOCOLS, ask, error_message, protocol_path, request_body
from tests.support.sse import events, json_events

TIMEOUT = {"X-Request-Timeout": "0.3"}


@pytest.mark.parametrize("protocol", TEXT_PROTOCOLS)
def test_a_request_past_its_deadline_is_408_3007_and_aborted(client, engine, protocol):
    engine.delay = 0.2  # six words: 1.2 s
    response = ask(client, protocol, headers=TIMEOUT)
    assert error_message(response, protocol, 408, 3007) == "Request timeout"
    assert engine.aborted == [response.headers["x-request-id"]]


@pytest.mark.parametrize("protocol", TEXT_PROTOCOLS)
def test_a_stream_past_its_deadline_ends_with_an_error_event_and_done(client, engine, protocol):
    engine.delay = 0.2
    body = request_body(protocol, {"stream": True})
    with client.stream("POST", protocol_path(protocol), json=body, headers=TIMEOUT) as response:
        assert response.status_code == 200  # the first token came in time
        sent = json_events(events(response))  # checks [DONE] comes last
    error = sent[-1]["errors"][0] if protocol == "run" else sent[-1]["error"]
    assert str(error["code"]) == "3007"
    assert engine.aborted == [response.headers["x-request-id"]]


def test_in_time_the_answer_is_whole(client, engine):
    engine.delay = 0.01
    response = ask(client, "run", headers={"X-Request-Timeout": "5"})
    assert response.json()["result"]["response"] == engine.text() and engine.aborted == []


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan", "inf-ish"])
def test_a_bad_timeout_header_is_400(client, engine, value):
    response = ask(client, "chat", headers={"X-Request-Timeout": value})
    assert "x-request-timeout header must be a number of seconds above 0" in error_message(response, "chat", 400, 5006)
    assert engine.requests == []
