"""A client that goes away stops its engine request at once: nothing keeps generating for nobody."""

from __future__ import annotations

import httpx

from tests.support.waiting import wait_for

# A raw prompt at high temperature almost never samples end-of-sequence: without an abort this
# request would generate for minutes.
ENDLESS = {"prompt": "Once upon a time", "raw": True, "temperature": 2, "max_tokens": 4000, "seed": 1}
RUNNING = "vllm:num_requests_running"


def test_closing_a_stream_aborts_the_engine_request(server):
    with server.client() as client, client.stream("POST", server.run_url(), json={**ENDLESS, "stream": True}) as r:
        lines = r.iter_lines()
        received = [next(lines) for _ in range(6)]  # a few token events: generation is under way
        assert any(line.startswith("data: {") for line in received)
        wait_for(lambda: server.metric(RUNNING) == 1, "the engine to run it", timeout=30)
    # Leaving the block closed the connection mid-stream.
    wait_for(lambda: server.metric(RUNNING) == 0, "the engine request to be aborted", timeout=10)


def test_a_sync_client_that_gives_up_aborts_the_engine_request(server):
    with server.client() as client:
        try:
            client.post(server.run_url(), json=ENDLESS, timeout=3)
        except httpx.ReadTimeout:
            pass
        else:
            raise AssertionError("the endless request finished within 3 s")
    wait_for(lambda: server.metric(RUNNING) == 0, "the engine request to be aborted", timeout=10)
    # And the server still answers normally afterwards.
    with server.client() as client:
        assert client.post(server.run_url(), json={"prompt": "Hi", "max_tokens": 2}).status_code == 200
