"""Keys' limits shared through Redis (`redis_url`): replicas on one Redis hold a key's rate and its
requests in flight together, a replica that dies gives its places back when they expire, and while
Redis is unreachable `cluster.key_limits_without_redis` decides (open: each replica alone; closed:
503 / 3048) until it answers again."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from server.auth import digest
from server.config import ModelConfig
from server.stores.key_limits import SharedKeyLimits, redis_names
from server.stores.redis import Redis
from tests.pipeline.requests import CHAT, QUESTION, run_path
from tests.support.envelopes import openai_error, workers_ai_error
from tests.support.fakes import TEXT_MODEL, FakeEngines, FakeTextEngine, fake_settings
from tests.support.metrics import scrape
from tests.support.servers import ServedApp, serve_app
from tests.support.stores import RedisServer, redis_server
from tests.support.waiting import wait_for

KEYS = [
    {"name": "three", "key": "three-a-minute", "requests_per_minute": 3},
    {"name": "pair", "key": "two-at-a-time", "max_concurrent": 2},
    {"name": "single", "key": "one-at-a-time", "max_concurrent": 1},
    {"name": "two", "key": "two-a-minute", "requests_per_minute": 2},
]
CHAT_BODY = {"model": TEXT_MODEL, "messages": QUESTION}
UNSHARED = "wai_key_limits_unshared_total"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class HeldTextEngine(FakeTextEngine):
    """The fake engine, holding each request before its first word while `gate` is closed."""

    def __init__(self, gate: threading.Event, *args: Any):
        super().__init__(*args)
        self.gate = gate
        self.holding = 0

    async def generate(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:  # type: ignore[override]
        self.holding += 1
        try:
            while not self.gate.is_set():
                await asyncio.sleep(0.01)
        finally:
            self.holding -= 1
        async for delta in super().generate(*args, **kwargs):
            yield delta


class HeldEngines(FakeEngines):
    def __init__(self, gate: threading.Event):
        super().__init__()
        self.gate = gate

    def text(self, model: ModelConfig, checkpoint: str, chat_template: str | None) -> FakeTextEngine:
        engine = self.texts[model.name] = HeldTextEngine(self.gate, model, checkpoint, chat_template)
        return engine


@contextmanager
def replicas(
    root: Path, redis_url: str, count: int, gate: threading.Event, **settings: Any
) -> Iterator[list[ServedApp]]:
    """`count` apps on fake engines, each with its own folder, sharing `redis_url`."""
    with ExitStack() as stack:
        yield [
            stack.enter_context(
                serve_app(
                    fake_settings(
                        root / f"replica-{n}", keys=KEYS, api_keys=["plain"], redis_url=redis_url, **settings
                    ),
                    HeldEngines(gate),
                )
            )
            for n in range(count)
        ]


def opened() -> threading.Event:
    gate = threading.Event()
    gate.set()
    return gate


@pytest.fixture(scope="module")
def gate() -> threading.Event:
    return opened()


@pytest.fixture(scope="module")
def three(tmp_path_factory, redis_store: RedisServer, gate: threading.Event) -> Iterator[list[ServedApp]]:
    redis_store.flush()
    with replicas(tmp_path_factory.mktemp("shared"), redis_store.url, 3, gate) as apps:
        yield apps


def post(app: ServedApp, key: str, path: str = "") -> httpx.Response:
    with app.client(headers=bearer(key)) as client:
        return client.post(path, json=CHAT_BODY) if path else client.post(run_path(), json={"prompt": "Hi"})


def test_a_rate_holds_across_replicas(three):
    statuses = [post(three[n % 3], "three-a-minute").status_code for n in range(6)]
    assert statuses == [200, 200, 200, 429, 429, 429]  # three in all, not three each
    for app in three:
        refused = post(app, "three-a-minute")
        workers_ai_error(refused, 429, 3040)
        assert 1 <= int(refused.headers["retry-after"]) <= 20  # a token every 20 s
        refused = post(app, "three-a-minute", CHAT)
        assert openai_error(refused, 429, "rate_limit_exceeded")["type"] == "requests"
        assert 1 <= int(refused.headers["retry-after"]) <= 20
    assert post(three[0], "plain").status_code == 200


def test_requests_in_flight_hold_across_replicas(three, gate):
    async def across_replicas() -> None:
        gate.clear()
        clients = [app.async_client(headers=bearer("two-at-a-time"), timeout=30) for app in three]
        try:
            held = [asyncio.create_task(clients[n].post(CHAT, json=CHAT_BODY)) for n in (0, 1)]
            while sum(app.text_engine.holding for app in three) < 2:
                await asyncio.sleep(0.01)
            refused = await clients[2].post(CHAT, json=CHAT_BODY)
            assert openai_error(refused, 429, "rate_limit_exceeded") and refused.headers["retry-after"] == "1"
            workers_ai_error(await clients[2].post(run_path(), json={"prompt": "Hi"}), 429, 3040)
            gate.set()
            assert [(await answer).status_code for answer in held] == [200, 200]
            # Both places were given back in Redis: two more fit at once, from any replica.
            again = [clients[n].post(CHAT, json=CHAT_BODY) for n in (2, 1)]
            assert [answer.status_code for answer in await asyncio.gather(*again)] == [200, 200]
        finally:
            gate.set()
            for client in clients:
                await client.aclose()

    asyncio.run(across_replicas())


async def die_holding(url: str, key: str, most: int, request_timeout_s: float) -> None:
    """A replica that took `most` places for `key` and died before giving any back."""
    dead = Redis(url, timeout_s=2)
    limits = SharedKeyLimits(dead, request_timeout_s)
    for n in range(most):
        assert await limits.take(digest(key), None, most, f"dead-{n}") == 0
    await dead.close()


def test_a_dead_replicas_places_come_back_once_they_expire(tmp_path, redis_store):
    settings = {"limits": {"max_body_bytes": 1_000_000, "request_timeout_s": 0.5}}
    with replicas(tmp_path, redis_store.url, 2, opened(), **settings) as apps:
        asyncio.run(die_holding(redis_store.url, "one-at-a-time", 1, request_timeout_s=0.5))
        for app in apps:
            workers_ai_error(post(app, "one-at-a-time"), 429, 3040)
        wait_for(lambda: post(apps[1], "one-at-a-time").status_code == 200, "the dead replica's place to expire", 30)
    _, in_flight = redis_names(digest("one-at-a-time"))
    assert redis.Redis.from_url(redis_store.url).zcard(in_flight) == 0  # expired and given back


# --- Redis unreachable ----------------------------------------------------------------------


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


def counted_in_redis(server: RedisServer, key: str) -> bool:
    rate, _ = redis_names(digest(key))
    return bool(redis.Redis.from_url(server.url).exists(rate))


def without_redis(tmp_path: Path, server: RedisServer, mode: str) -> Any:
    cluster = {"key_limits_without_redis": mode, "store_timeout_s": 0.5}
    return replicas(tmp_path, server.url, 1, opened(), cluster=cluster)


def test_open_counts_in_each_replica_alone_until_redis_answers(tmp_path, private_redis):
    with without_redis(tmp_path, private_redis, "open") as [app]:
        assert post(app, "three-a-minute").status_code == 200
        assert counted_in_redis(private_redis, "three-a-minute")
        private_redis.stop()
        before = scrape(app)
        statuses = [post(app, "two-a-minute").status_code for _ in range(3)]
        assert statuses == [200, 200, 429]  # the key's limit, held by this replica
        assert post(app, "plain").status_code == 200  # a key without limits never asks Redis
        assert (scrape(app) - before).value(UNSHARED, outcome="local") == 3
        assert (scrape(app) - before).value(UNSHARED, outcome="refused") == 0

        private_redis.start()  # empty, and without the script: NOSCRIPT, loaded again
        before = scrape(app)
        assert post(app, "two-a-minute").status_code == 200  # counted in Redis again, from a full bucket
        assert counted_in_redis(private_redis, "two-a-minute")
        assert (scrape(app) - before).value(UNSHARED) == 0


def test_closed_refuses_limited_keys_until_redis_answers(tmp_path, private_redis):
    with without_redis(tmp_path, private_redis, "closed") as [app]:
        assert post(app, "two-a-minute").status_code == 200
        private_redis.stop()
        before = scrape(app)
        message = workers_ai_error(post(app, "two-a-minute"), 503, 3048)
        assert message == "The key limits store is unavailable, please try again."
        refused = post(app, "one-at-a-time", CHAT)
        assert openai_error(refused, 503, "3048")["type"] == "server_error" and refused.headers["retry-after"] == "5"
        assert post(app, "plain").status_code == 200
        assert (scrape(app) - before).value(UNSHARED, outcome="refused") == 2
        assert (scrape(app) - before).value(UNSHARED, outcome="local") == 0

        private_redis.start()
        assert post(app, "three-a-minute").status_code == 200
        assert counted_in_redis(private_redis, "three-a-minute")
        assert post(app, "two-a-minute").status_code == 200
