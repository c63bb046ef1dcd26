"""Overload, priorities, deadlines, request ids and draining on the real engine, over HTTP.

The bounds are tested on the small server (conftest.py): two running slots and four waiting places,
so that a flood is cheap on a CPU; it is drained with SIGTERM at the end of the module.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time

import httpx

from tests.integration.session import SMALL_DRAIN_TIMEOUT_S
from tests.support.repo import STAND_IN
from tests.support.sse import events, json_events

KEY = {"Authorization": "Bearer small-key"}
LONG = {"prompt": "Write a very long story.", "max_tokens": 4000, "temperature": 2, "seed": 3}


def test_a_client_request_id_is_echoed_logged_and_the_engine_id(client, server):
    response = client.post(
        server.run_url(), json={"prompt": "Hi", "max_tokens": 2}, headers={"X-Request-Id": "trace-42"}
    )
    assert response.headers["x-request-id"] == response.headers["cf-ai-req-id"] == "trace-42"
    deadline = time.monotonic() + 10  # the line is written once the last byte is out: a moment later
    while not (lines := [line for line in server.log().splitlines() if '"request_id": "trace-42"' in line]):
        assert time.monotonic() < deadline, "no log line for trace-42"
        time.sleep(0.1)
    assert json.loads(lines[-1])["status"] == 200


def test_a_stream_past_its_deadline_ends_with_3007_and_frees_the_engine(server):
    with (
        server.client() as client,
        client.stream(
            "POST", server.run_url(), json={**LONG, "stream": True}, headers={"X-Request-Timeout": "2"}
        ) as response,
    ):
        assert response.status_code == 200
        sent = json_events(events(response))
    assert sent[-1]["errors"][0] == {"code": 3007, "message": "Request timeout"}
    assert server.engine_running() == 0


def test_a_sync_request_past_its_deadline_is_408(client, server):
    response = client.post(
        "/v1/chat/completions",
        headers={"X-Request-Timeout": "1"},
        json={
            "model": STAND_IN,
            "messages": [{"role": "user", "content": "Tell a story."}],
            "max_tokens": 4000,
            "temperature": 2,
        },
    )
    assert response.status_code == 408 and response.json()["error"]["code"] == "3007"
    assert server.engine_running() == 0


def test_a_flood_far_past_the_bounds_is_answered_or_refused_every_one(small_server):
    async def flood() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=300, headers=KEY) as client:
            body = {"prompt": "Name a colour.", "max_tokens": 16}
            return list(await asyncio.gather(*(client.post(small_server.run_url(), json=body) for _ in range(16))))

    statuses = [response.status_code for response in asyncio.run(flood())]
    assert len(statuses) == 16 and set(statuses) <= {200, 429}
    assert statuses.count(200) >= 2 and statuses.count(429) >= 1
    assert small_server.engine_running() == 0


def test_reject_if_busy_while_the_running_slots_are_taken(small_server):
    with small_server.client() as first, small_server.client() as second:
        with (
            first.stream("POST", small_server.run_url(), json={**LONG, "stream": True}) as one,
            second.stream("POST", small_server.run_url(), json={**LONG, "stream": True}) as two,
        ):
            assert one.status_code == two.status_code == 200
            busy = httpx.post(
                small_server.run_url() + "?rejectIfBusy=true", json={"prompt": "Hi"}, headers=KEY, timeout=60
            )
            assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
            assert busy.json()["errors"][0]["code"] == 3040
    assert small_server.engine_running() == 0


def test_an_interactive_request_overtakes_a_queue_of_low_priority_ones(small_server):
    low = {"X-Priority": "low"}

    async def scenario() -> tuple[bool, list[int]]:
        async with httpx.AsyncClient(timeout=300, headers=KEY) as client:

            async def stream(max_tokens: int, started: asyncio.Event) -> None:
                body = {**LONG, "max_tokens": max_tokens, "stream": True}
                async with client.stream("POST", small_server.run_url(), json=body, headers=low) as response:
                    async for _ in response.aiter_lines():
                        started.set()

            short_started, long_started = asyncio.Event(), asyncio.Event()
            short = asyncio.create_task(stream(30, short_started))  # frees its slot first
            long = asyncio.create_task(stream(300, long_started))  # holds the other one
            await asyncio.wait_for(asyncio.gather(short_started.wait(), long_started.wait()), 120)
            queued = [
                asyncio.create_task(client.post(small_server.run_url(), json={**LONG, "max_tokens": 40}, headers=low))
                for _ in range(2)
            ]
            await asyncio.sleep(1)
            interactive = await client.post(small_server.run_url(), json={**LONG, "max_tokens": 5})
            # First in line for the slot the short stream frees, though it came last: under
            # first-come-first-served it would wait for the long stream or a queued request to end.
            overtook = not long.done()
            statuses = [interactive.status_code] + [r.status_code for r in await asyncio.gather(*queued)]
            await asyncio.gather(short, long)
            return overtook, statuses

    overtook, statuses = asyncio.run(scenario())
    assert statuses == [200, 200, 200] and overtook
    assert small_server.engine_running() == 0


def test_per_key_rate_and_scope(small_server):
    first = httpx.post(
        small_server.run_url(),
        json={"prompt": "Hi", "max_tokens": 2},
        headers={"Authorization": "Bearer rpm-key"},
        timeout=60,
    )
    second = httpx.post(
        small_server.run_url(),
        json={"prompt": "Hi", "max_tokens": 2},
        headers={"Authorization": "Bearer rpm-key"},
        timeout=60,
    )
    assert (first.status_code, second.status_code) == (200, 429)
    assert second.json()["errors"][0]["code"] == 3040 and int(second.headers["retry-after"]) >= 1
    tuner = {"Authorization": "Bearer tuner-key"}  # configured as its digest alone
    finetunes = httpx.get(f"{small_server.base_url}/client/v4/accounts/a/ai/finetunes", headers=tuner)
    assert finetunes.status_code == 200
    assert httpx.post(small_server.run_url(), json={"prompt": "Hi"}, headers=tuner).status_code == 401


def test_sigterm_drains_then_exits_0(small_server):
    # Last in this module: it stops the server.
    # A long answer (about 6 s here), so that it is still in flight when the new request comes.
    body = {"prompt": "Write a long story about a cat who learns to fly.", "max_tokens": 64, "stream": True}
    with small_server.client() as client, client.stream("POST", small_server.run_url(), json=body) as response:
        assert response.status_code == 200
        small_server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert httpx.get(f"{small_server.base_url}/readyz").status_code == 503
        refused = httpx.post(small_server.run_url(), json={"prompt": "Hi"}, headers=KEY, timeout=30)
        assert refused.status_code == 503 and refused.json()["errors"][0]["code"] == 3040
        sent = json_events(events(response))
    assert sent[-1]["usage"]["completion_tokens"] >= 1  # it finished, with its usage, then [DONE]
    assert small_server.process.wait(timeout=SMALL_DRAIN_TIMEOUT_S + 30) == 0
