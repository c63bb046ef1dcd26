"""A client that goes away aborts its engine request, and the request stops counting as in flight."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.pipeline.requests import CHAT, QUESTION, run_path
from tests.support.fakes import TEXT_MODEL
from tests.support.metrics import scrape
from tests.support.waiting import wait_for

SLOW = {"max_tokens": 50}  # the slow script's 50 words take 5 s: a test that waits for it to end fails


@pytest.fixture
def slow(engine):
    engine.script = [f"w{i}" for i in range(50)]
    engine.delay = 0.1


def in_flight(client: httpx.Client) -> float:
    return scrape(client).value("wai_requests_in_flight", model=TEXT_MODEL)


def assert_aborted_and_counted(
    client: httpx.Client, engine, request_id: str, before, status: str, protocol: str
) -> None:
    wait_for(lambda: request_id in engine.aborted, f"the engine to abort {request_id}", timeout=4)
    assert request_id not in engine.finished
    wait_for(lambda: in_flight(client) == 0, "no request in flight", timeout=4)
    counted = scrape(client) - before
    assert counted.value("wai_requests_total", model=TEXT_MODEL, protocol=protocol, status=status, code="3008") == 1
    assert counted.value("wai_requests_total", model=TEXT_MODEL) == 1


def test_leaving_a_run_stream_aborts_the_engine_request(client, engine, slow):
    before = scrape(client)
    body = {"prompt": "Hi", "stream": True, **SLOW}
    with client.stream("POST", run_path(), json=body) as response:
        request_id = response.headers["cf-ai-req-id"]
        lines = response.iter_lines()  # kept: dropping an httpx line iterator closes the connection
        assert next(lines).startswith('data: {"response":"w0"')
        assert in_flight(client) == 1 and engine.aborted == []
    # Leaving the block closed the connection mid-stream; a stream the client left counts as 200 / 3008.
    assert_aborted_and_counted(client, engine, request_id, before, status="200", protocol="workers_ai")


def test_leaving_a_chat_stream_aborts_the_engine_request(served, client, engine, slow):
    async def leave_after_first_chunk() -> str:
        async with served.async_client() as async_client:
            body = {"model": TEXT_MODEL, "messages": QUESTION, "stream": True, **SLOW}
            async with async_client.stream("POST", CHAT, json=body) as response:
                async for line in response.aiter_lines():
                    assert line.startswith("data: {")
                    return response.headers["cf-ai-req-id"]
        raise AssertionError("the stream sent nothing")

    before = scrape(client)
    request_id = asyncio.run(leave_after_first_chunk())
    assert_aborted_and_counted(client, engine, request_id, before, status="200", protocol="openai")


def test_a_sync_client_that_gives_up_aborts_the_engine_request(client, engine, slow):
    before = scrape(client)
    with pytest.raises(httpx.ReadTimeout):
        client.post(run_path(), json={"prompt": "Hi", **SLOW}, timeout=0.5)
    [request_id] = engine.requests
    # The answer (408 / 3008) goes nowhere, but the outcome is counted.
    assert_aborted_and_counted(client, engine, request_id, before, status="408", protocol="workers_ai")
    # And the server answers normally afterwards.
    engine.delay = 0
    assert client.post(run_path(), json={"prompt": "Hi", "max_tokens": 2}).json()["result"]["response"] == "w0 w1"
