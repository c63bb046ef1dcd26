"""A stream whose front end fell behind the engine gets the text it missed merged into fewer events:
never reordered, dropped or duplicated, with the same usage, closing events and `[DONE]`.

The front end is made to fall behind for real: its process is stopped (SIGSTOP) for a few seconds
while the engine, in its own process, goes on generating, then continued. Greedy sampling makes the
same request give the same tokens, so the stream that fell behind is compared with one that did not.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from tests.support.servers import RunningServer

MAX_TOKENS = 48
STOPPED_S = 2.5
MESSAGES = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]


def stream(server: RunningServer, protocol: str, on_first_event=None) -> list[str]:
    """The `data:` payloads of one greedy streamed answer, in order; `on_first_event` runs once the
    first one arrived, while the answer goes on."""
    if protocol == "workers_ai":
        url = server.run_url()
        body: dict = {"messages": MESSAGES, "max_tokens": MAX_TOKENS, "temperature": 0, "stream": True}
    else:
        url = f"{server.base_url}/v1/chat/completions"
        body = {
            "model": "@cf/meta/llama-3-8b-instruct",
            "messages": MESSAGES,
            "max_tokens": MAX_TOKENS,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    payloads = []
    with server.client() as client, client.stream("POST", url, json=body) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line:
                continue
            assert line.startswith("data: ")
            payloads.append(line.removeprefix("data: "))
            if len(payloads) == 1 and on_first_event is not None:
                on_first_event()
    return payloads


def text_of(payloads: list[str], protocol: str) -> str:
    events = [json.loads(p) for p in payloads[:-1]]
    if protocol == "workers_ai":
        return "".join(event.get("response", "") for event in events)
    return "".join(choice["delta"].get("content") or "" for event in events for choice in event["choices"])


def without_padding(payload: str) -> str:
    if payload == "[DONE]":
        return payload
    event = json.loads(payload)
    event.pop("p", None)
    return json.dumps(event, sort_keys=True)


def pause(pid: int) -> None:
    """Stop the front end's process for a while, in the background."""

    def stop_then_continue() -> None:
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(STOPPED_S)
        finally:
            os.kill(pid, signal.SIGCONT)

    threading.Thread(target=stop_then_continue, daemon=True).start()


@pytest.mark.parametrize("protocol", ["workers_ai", "openai"])
def test_a_stream_that_fell_behind_gets_the_same_text_in_fewer_events(server, protocol):
    kept_up = stream(server, protocol)
    fell_behind = stream(server, protocol, on_first_event=lambda: pause(server.process.pid))

    assert text_of(fell_behind, protocol) == text_of(kept_up, protocol) != ""
    # The same ending: for Workers AI the empty event, the usage event and [DONE]; for OpenAI the
    # usage chunk and [DONE], after a last choice with the same finish reason.
    if protocol == "workers_ai":
        assert [without_padding(p) for p in fell_behind[-3:]] == [without_padding(p) for p in kept_up[-3:]]
    else:
        assert [_no_ids(p) for p in fell_behind[-2:]] == [_no_ids(p) for p in kept_up[-2:]]
        assert finish_reason(fell_behind) == finish_reason(kept_up) == "length"
    # The engine went on while the front end was stopped: what it made meanwhile came merged.
    assert len(fell_behind) < len(kept_up)


def finish_reason(payloads: list[str]) -> str | None:
    return json.loads(payloads[-3])["choices"][0]["finish_reason"]


def _no_ids(payload: str) -> str:
    if payload == "[DONE]":
        return payload
    event = json.loads(payload)
    event.pop("id", None)
    event.pop("created", None)
    return json.dumps(event, sort_keys=True)
