"""Draining on SIGTERM and stopping when an engine dies, on a server of its own per test: the
signals go to wai serve's own server class (server/cli.py), as the operating system would send them."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.pipeline.requests import EMBEDDINGS, ask, error_message, protocol_path, request_body, run
from tests.support.envelopes import workers_ai_error
from tests.support.fakes import EMBEDDING_MODEL, TEXT_MODEL, fake_settings
from tests.support.servers import ServedApp, serve_app
from tests.support.sse import json_events


@pytest.fixture
def own(tmp_path) -> Iterator[ServedApp]:
    settings = fake_settings(tmp_path, limits={"max_body_bytes": 1_000_000, "drain_timeout_s": 1.0})
    with serve_app(settings) as served:
        served.text_engine.delay = 0.1
        yield served


def stream_in_background(served: ServedApp, protocol: str = "run") -> tuple[threading.Thread, dict]:
    """Start a stream; returns once its first event is in. `got` fills in as the stream ends."""
    got: dict = {}
    first = threading.Event()

    def read() -> None:
        with served.client(timeout=30) as client:
            body = request_body(protocol, {"stream": True})
            with client.stream("POST", protocol_path(protocol), json=body) as response:
                got["id"] = response.headers["x-request-id"]
                lines = response.iter_lines()
                received = [next(lines)]
                first.set()
                try:
                    received += list(lines)
                except httpx.RemoteProtocolError:
                    got["torn"] = True
                    return
                got["events"] = json_events([line[len("data: ") :] for line in received if line.startswith("data: ")])

    thread = threading.Thread(target=read)
    thread.start()
    assert first.wait(10)
    return thread, got


def wait_for_exit(served: ServedApp, seconds: float = 10) -> None:
    served.thread.join(seconds)
    assert not served.thread.is_alive(), "the server did not exit"


def test_sigterm_refuses_new_requests_and_lets_those_in_flight_finish(own):
    own.text_engine.script = ["one", "two", "three", "four", "five"]  # 0.5 s: within the 1 s drain
    thread, got = stream_in_background(own)
    own.server.handle_exit(signal.SIGTERM, None)
    with own.client() as client:
        assert client.get("/readyz").status_code == 503
        assert error_message(ask(client, "run"), "run", 503, 3040)
        assert error_message(ask(client, "chat"), "chat", 503, 3040)
    thread.join(10)
    assert "".join(event["response"] for event in got["events"] if "usage" not in event).strip()
    assert got["events"][-1]["usage"]["completion_tokens"] == 5  # whole, with its usage event
    wait_for_exit(own)
    assert own.app.state.lifecycle.exit_code == 0 and own.text_engine.aborted == []


@pytest.mark.parametrize("protocol", ["run", "chat"])
def test_streams_still_open_at_the_drain_timeout_end_with_an_error_event_and_done(own, protocol):
    own.text_engine.delay = 0.5  # six words: 3 s, past the 1 s drain
    thread, got = stream_in_background(own, protocol)
    started = time.monotonic()
    own.server.handle_exit(signal.SIGTERM, None)
    thread.join(10)
    last = got["events"][-1]
    error = last["errors"][0] if protocol == "run" else last["error"]
    assert str(error["code"]) == "3040"
    assert own.text_engine.aborted == [got["id"]]
    wait_for_exit(own)
    assert time.monotonic() - started < 5 and own.app.state.lifecycle.exit_code == 0


def test_a_second_signal_stops_at_once(own):
    own.text_engine.delay = 2.0
    thread, got = stream_in_background(own)
    own.app.state.lifecycle.drain_timeout_s = 60
    own.server.handle_exit(signal.SIGTERM, None)
    started = time.monotonic()
    own.server.handle_exit(signal.SIGINT, None)
    wait_for_exit(own)
    assert time.monotonic() - started < 5
    thread.join(15)
    assert got["torn"]  # stopping at once is what the second signal asks for


def test_a_dead_engine_ends_requests_in_flight_refuses_new_ones_and_exits_1(own):
    own.text_engine.delay = 0.5
    thread, got = stream_in_background(own)
    own.text_engine.die()
    with own.client() as client:
        response = ask(client, "chat")
        assert error_message(response, "chat", 503, 3040) and response.headers["retry-after"] == "5"
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["models"][TEXT_MODEL] == "dead"
    thread.join(10)
    assert got["events"][-1]["errors"][0]["code"] == 3040  # then [DONE]: json_events checked it
    wait_for_exit(own)
    assert own.app.state.lifecycle.exit_code == 1


def test_a_dead_embedding_engine_is_503_3040(own):
    own.embedding_engine.die()
    with own.client() as client:
        workers_ai_error(run(client, {"text": "hi"}, model=EMBEDDING_MODEL), 503, 3040)
        openai_response = client.post(EMBEDDINGS, json={"model": EMBEDDING_MODEL, "input": "hi"})
        assert openai_response.json()["error"]["code"] == "3040"
    assert own.embedding_engine.requests == []
    wait_for_exit(own)
    assert own.app.state.lifecycle.exit_code == 1
