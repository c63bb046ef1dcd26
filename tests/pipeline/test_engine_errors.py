"""Engine failures in each protocol's terms: refusals, unavailability, failures mid-stream, a dead engine."""

from __future__ import annotations

import pytest

from server.engine.types import EngineRejected, EngineUnavailable
from tests.pipeline.requests import TEXT_PROTOCOLS, ask, error_message, protocol_path, request_body
from tests.support.fakes import TEXT_MODEL
from tests.support.sse import events, json_events

CAPACITY = "Capacity temporarily exceeded, please try again."


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("protocol", TEXT_PROTOCOLS)
def test_a_refusal_before_the_first_delta_is_400_5006(client, engine, protocol, stream):
    engine.fail(EngineRejected, "the schema is too deep")
    response = ask(client, protocol, {"stream": stream})
    assert error_message(response, protocol, 400, 5006) == "AiError: Bad input: Error: the schema is too deep"
    assert len(engine.requests) == 1  # it reached the engine, which refused it


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("protocol", TEXT_PROTOCOLS)
def test_an_unavailable_engine_is_503_3040_with_retry_after(client, engine, protocol, stream):
    engine.fail(EngineUnavailable, TEXT_MODEL)
    response = ask(client, protocol, {"stream": stream})
    assert error_message(response, protocol, 503, 3040) == CAPACITY
    assert response.headers["retry-after"] == "5"
    if protocol != "run":
        assert response.json()["error"]["type"] == "server_error"


@pytest.mark.parametrize("protocol", TEXT_PROTOCOLS)
def test_a_failure_after_the_first_delta_of_a_sync_answer_is_the_answer(client, engine, protocol):
    engine.fail(EngineUnavailable, TEXT_MODEL, at_step=2)
    assert error_message(ask(client, protocol), protocol, 503, 3040) == CAPACITY


def stream_after_failure(client, protocol: str) -> list[str]:
    with client.stream("POST", protocol_path(protocol), json=request_body(protocol, {"stream": True})) as response:
        assert response.status_code == 200  # the first delta came before the failure
        return events(response)


def test_a_run_stream_that_fails_ends_with_an_error_event_then_done(client, engine):
    engine.fail(EngineUnavailable, TEXT_MODEL, at_step=2)
    payloads = stream_after_failure(client, "run")
    parsed = json_events(payloads)
    assert [event["response"] for event in parsed[:2]] == ["Paris", " is"]
    assert parsed[2:] == [
        {
            "response": "",
            "result": {},
            "success": False,
            "errors": [{"code": 3040, "message": CAPACITY}],
            "messages": [],
        }
    ]


@pytest.mark.parametrize("protocol", ["chat", "completions"])
def test_an_openai_stream_that_fails_ends_with_an_error_object_then_done(client, engine, protocol):
    engine.fail(EngineRejected, "no more", at_step=2)
    parsed = json_events(stream_after_failure(client, protocol))
    assert len(parsed) == 3 and all(chunk["choices"] for chunk in parsed[:2])
    assert parsed[2] == {
        "error": {
            "message": "AiError: Bad input: Error: no more",
            "type": "invalid_request_error",
            "param": None,
            "code": "5006",
        }
    }
