"""The lifespan starts every engine once and stops them when the server stops; concurrent requests
each get their own engine request."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from server.engine.types import EngineState
from tests.pipeline.requests import CHAT, QUESTION
from tests.support.fakes import EMBEDDING_MODEL, TEXT_MODEL, fake_settings
from tests.support.servers import serve_app


def test_the_lifespan_starts_and_stops_the_engines(tmp_path):
    with serve_app(fake_settings(tmp_path)) as served:
        engines = served.engines.all()
        assert len(engines) == 2
        assert [(engine.starts, engine.state) for engine in engines] == [(1, EngineState.READY)] * 2
        ready = httpx.get(f"{served.base_url}/readyz")
        assert ready.json() == {"status": "ready", "models": {TEXT_MODEL: "ready", EMBEDDING_MODEL: "ready"}}
    assert [(engine.stops, engine.state) for engine in engines] == [(1, EngineState.STOPPED)] * 2
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{served.base_url}/healthz")


def test_concurrent_requests_each_get_their_own_engine_request(served, engine):
    engine.delay = 0.01

    async def ask_all() -> list[httpx.Response]:
        async with served.async_client() as client:
            return await asyncio.gather(
                *(client.post(CHAT, json={"model": TEXT_MODEL, "messages": QUESTION}) for _ in range(4))
            )

    responses = asyncio.run(ask_all())
    assert [response.status_code for response in responses] == [200] * 4
    request_ids = [response.headers["cf-ai-req-id"] for response in responses]
    assert len(set(request_ids)) == 4 and sorted(request_ids) == sorted(engine.finished)
    assert {response.json()["choices"][0]["message"]["content"] for response in responses} == {engine.text()}
