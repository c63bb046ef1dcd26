"""A client's X-Request-Id: echoed, used as the engine request id, replaced when unsafe or in flight."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from tests.pipeline.requests import CHAT, QUESTION, chat, run


def test_a_safe_client_id_is_echoed_and_becomes_the_engine_request_id(client, engine):
    response = run(client, {"prompt": "Hi"}, headers={"X-Request-Id": "trace-7.a:b_c"})
    assert response.headers["x-request-id"] == response.headers["cf-ai-req-id"] == "trace-7.a:b_c"
    assert engine.requests == ["trace-7.a:b_c"]
    assert chat(client, headers={"X-Request-Id": "openai-trace"}).headers["x-request-id"] == "openai-trace"
    assert engine.requests[-1] == "openai-trace"


def test_an_unsafe_or_missing_id_is_replaced_by_a_new_one(client, engine):
    for sent in ("has space", "x" * 129, "new\\nline", "", None):
        headers = {} if sent is None else {"X-Request-Id": sent}
        echoed = run(client, {"prompt": "Hi"}, headers=headers).headers["x-request-id"]
        assert echoed != sent and uuid.UUID(echoed) and echoed == engine.requests[-1]


def test_errors_carry_the_id_too(client):
    response = run(client, {"prompt": 5}, headers={"X-Request-Id": "bad-body"})
    assert response.status_code == 400 and response.headers["x-request-id"] == "bad-body"


def test_the_same_id_twice_in_flight_gets_a_new_one_the_second_time(served, engine):
    engine.delay = 0.05

    async def both() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=served.base_url, timeout=30) as client:
            body = {"model": "@cf/test/fake", "messages": QUESTION}
            headers = {"X-Request-Id": "same"}
            return list(await asyncio.gather(*(client.post(CHAT, json=body, headers=headers) for _ in range(2))))

    ids = [response.headers["x-request-id"] for response in asyncio.run(both())]
    assert sorted(ids)[1] == "same" and sorted(ids)[0] != "same" and sorted(engine.requests) == sorted(ids)
