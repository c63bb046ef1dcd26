"""Backpressure: a model takes so many requests, refuses the rest at once with 429 / 3040, drops none."""

from __future__ import annotations

import asyncio

import httpx

from tests.pipeline.requests import CHAT, run_path
from tests.support.fakes import MAX_RUNNING, MAX_WAITING, MAX_WAITING_TOKENS, TEXT_MODEL


def flood(served, requests: list[tuple[str, dict]]) -> list[httpx.Response]:
    """Send every (path, body) at once; every answer, in order."""

    async def send_all() -> list[httpx.Response]:
        async with served.async_client(timeout=30) as client:
            return list(await asyncio.gather(*(client.post(path, json=body) for path, body in requests)))

    return asyncio.run(send_all())


def refused(response: httpx.Response) -> bool:
    """Out of capacity: 429 / 3040 on every protocol, in each one's error format."""
    openai = response.request.url.path.startswith("/v1/")
    if response.status_code != 429:
        return False
    assert response.headers["retry-after"] == "1"
    if openai:
        return response.json()["error"]["code"] == "3040" and response.json()["error"]["type"] == "server_error"
    return response.json()["errors"][0] == {"code": 3040, "message": "Capacity temporarily exceeded, please try again."}


def test_a_flood_past_the_queue_is_answered_or_refused_every_one(served, engine):
    engine.delay = 0.5  # nobody gets a first token before the whole flood has arrived
    prompt = {"prompt": "Hi"}
    chat = {"model": TEXT_MODEL, "messages": [{"role": "user", "content": "Hi"}]}
    requests = [(run_path(), prompt), (CHAT, chat)] * (MAX_WAITING + 3)
    responses = flood(served, requests)
    answered = [r for r in responses if r.status_code == 200]
    assert len(answered) == MAX_WAITING and sum(refused(r) for r in responses) == len(requests) - MAX_WAITING
    assert len(engine.finished) == MAX_WAITING and not engine.aborted  # the engine saw only what was admitted


def test_waiting_prompt_tokens_are_bounded_too(served, engine):
    engine.delay = 0.5
    # Raw, so the prompt is its words and a BOS: exactly half of the bound each.
    half = {"prompt": " ".join(["word"] * (MAX_WAITING_TOKENS // 2 - 1)), "raw": True}
    responses = flood(served, [(run_path(), half)] * 3)
    assert sorted(r.status_code for r in responses) == [200, 200, 429]


def test_reject_if_busy_refuses_once_the_running_slots_are_taken(served, engine):
    engine.delay = 0.3

    async def scenario() -> tuple[list[httpx.Response], httpx.Response, httpx.Response, httpx.Response]:
        async with served.async_client(timeout=30) as client:
            busy = [asyncio.create_task(client.post(run_path(), json={"prompt": "Hi"})) for _ in range(MAX_RUNNING)]
            await asyncio.sleep(0.1)
            by_query = await client.post(run_path() + "?rejectIfBusy=true", json={"prompt": "Hi"})
            by_options = await client.post(run_path(), json={"prompt": "Hi", "options": {"rejectIfBusy": True}})
            patient = await client.post(run_path(), json={"prompt": "Hi"})
            return list(await asyncio.gather(*busy)), by_query, by_options, patient

    busy, by_query, by_options, patient = asyncio.run(scenario())
    assert [r.status_code for r in busy] == [200] * MAX_RUNNING
    assert refused(by_query) and refused(by_options)
    assert patient.status_code == 200  # without rejectIfBusy it waits in the queue


def test_places_are_given_back_after_errors_and_left_streams(client, served, engine):
    engine.delay = 0.0
    for _ in range(3 * MAX_WAITING):  # more requests than places, one after another: none is kept
        assert client.post(run_path(), json={"prompt": "Hi", "max_tokens": 1}).status_code == 200
    service = served.app.state.registry.services[0]
    assert (service.admission.running, service.admission.waiting, service.admission.waiting_tokens) == (0, 0, 0)
