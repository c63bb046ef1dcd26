"""The AI Gateway's cache and rate limits in Redis (`redis_url`): shared by every replica, and an
unreachable Redis is a miss, a store skipped and limits counted in this replica alone, never an error."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

import redis as sync_redis
from prometheus_client import REGISTRY

from server.config import Settings
from server.serving.gateway_limits import (
    LocalGatewayLimits,
    SharedGatewayLimits,
    build_gateway_limits,
    window_of,
)
from server.serving.gateways import Gateway
from server.serving.response_cache import (
    CachedAnswer,
    LocalResponseCache,
    RedisResponseCache,
    build_response_cache,
    redis_name,
)
from server.stores.redis import Redis
from tests.support.ports import free_port

T = TypeVar("T")
ANSWER = CachedAnswer(200, "text/event-stream", b'data: {"response":"hi"}\n\ndata: [DONE]\n\n', True, {"a": "b"})
SLIDING = Gateway(
    "shared-sliding", rate_limiting_interval=3600, rate_limiting_limit=3, rate_limiting_technique="sliding"
)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def with_replicas(url: str, count: int, work: Callable[[list[Redis]], Awaitable[T]]) -> T:
    """`work` given `count` clients of one Redis, as many replicas have; closed after it."""

    async def run() -> T:
        clients = [Redis(url, timeout_s=0.5) for _ in range(count)]
        try:
            return await work(clients)
        finally:
            for client in clients:
                await client.close()

    return asyncio.run(run())


def unreachable() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # a closed port: refused at once


def settings(**gateways: object) -> Settings:
    return Settings.model_validate({"gateways": gateways})


# --- the cache ------------------------------------------------------------------------------


def test_with_redis_the_cache_is_in_redis_and_else_in_this_process(redis_store):
    async def built(clients: list[Redis]) -> None:
        assert isinstance(build_response_cache(settings(), clients[0]), RedisResponseCache)
        assert isinstance(build_response_cache(settings(), None), LocalResponseCache)
        assert isinstance(build_gateway_limits(settings(), clients[0]), SharedGatewayLimits)
        assert isinstance(build_gateway_limits(settings(), None), LocalGatewayLimits)

    with_replicas(redis_store.url, 1, built)


def test_an_answer_kept_by_one_replica_is_found_by_another(redis_store):
    redis_store.flush()

    async def share(clients: list[Redis]) -> None:
        first, second = (build_response_cache(settings(), client) for client in clients)
        assert await second.lookup("gw-shared", "k") is None
        await first.keep("gw-shared", "k", ANSWER, 90)
        assert await second.lookup("gw-shared", "k") == ANSWER
        assert await second.lookup("gw-other", "k") is None

    before = sample("wai_gateway_cache_lookups_total", gateway="gw-shared", outcome="hit")
    with_replicas(redis_store.url, 2, share)
    assert sample("wai_gateway_cache_lookups_total", gateway="gw-shared", outcome="hit") - before == 1
    raw = sync_redis.Redis.from_url(redis_store.url)
    assert 80 < raw.ttl(redis_name("gw-shared", "k")) <= 90  # Redis drops it at its TTL
    assert raw.get(redis_name("gw-shared", "k")).endswith(ANSWER.body)  # type: ignore[union-attr]


def test_redis_keeps_no_answer_over_the_largest(redis_store):
    redis_store.flush()

    async def keep(clients: list[Redis]) -> None:
        cache = build_response_cache(settings(max_cached_answer_bytes=10), clients[0])
        await cache.keep("gw-big", "small", replace(ANSWER, body=b"0123456789"), 60)
        await cache.keep("gw-big", "large", replace(ANSWER, body=b"0123456789A"), 60)
        await cache.keep("gw-big", "no-ttl", replace(ANSWER, body=b"0"), 0)
        assert await cache.lookup("gw-big", "small") is not None
        assert await cache.lookup("gw-big", "large") is None
        assert await cache.lookup("gw-big", "no-ttl") is None

    with_replicas(redis_store.url, 1, keep)


def test_an_unreachable_redis_is_a_miss_and_a_store_skipped():
    failures = {op: sample("wai_store_failures_total", store="redis", operation=op) for op in ("response cache",)}
    misses = sample("wai_gateway_cache_lookups_total", gateway="gw-down", outcome="miss")

    async def down(clients: list[Redis]) -> None:
        cache = build_response_cache(settings(), clients[0])
        await cache.keep("gw-down", "k", ANSWER, 60)
        assert await cache.lookup("gw-down", "k") is None

    with_replicas(unreachable(), 1, down)
    assert sample("wai_gateway_cache_lookups_total", gateway="gw-down", outcome="miss") - misses == 1
    assert (
        sample("wai_store_failures_total", store="redis", operation="response cache") - failures["response cache"] == 2
    )


# --- the rate limits ------------------------------------------------------------------------


def test_replicas_share_a_gateways_limit(redis_store):
    redis_store.flush()

    async def share(clients: list[Redis]) -> list[int | None]:
        first, second = (SharedGatewayLimits(client) for client in clients)
        return [await first.take(SLIDING), await second.take(SLIDING), await first.take(SLIDING)] + [
            await limits.take(SLIDING) for limits in (first, second)
        ]

    taken = with_replicas(redis_store.url, 2, share)
    assert taken[:3] == [None, None, None]
    # Refused on both: the first request leaves in an hour and at most one slice (a minute) more.
    assert all(wait is not None and 3600 <= wait <= 3660 for wait in taken[3:]), taken
    assert sync_redis.Redis.from_url(redis_store.url).ttl(window_of(SLIDING).name) > 3600


def test_a_fixed_window_in_redis_ends_on_the_clock(redis_store):
    redis_store.flush()
    gateway = Gateway(
        "shared-fixed", rate_limiting_interval=10**9, rate_limiting_limit=2, rate_limiting_technique="fixed"
    )

    async def take(clients: list[Redis]) -> list[int | None]:
        limits = SharedGatewayLimits(clients[0])
        return [await limits.take(gateway) for _ in range(3)]

    taken = with_replicas(redis_store.url, 1, take)
    assert taken[:2] == [None, None]
    # The window of a billion seconds that holds now ends at 2,000,000,000 (May 2033), on Redis's clock.
    assert taken[2] is not None and abs(taken[2] - (2 * 10**9 - time.time())) < 5


def test_a_gateway_without_a_limit_never_asks_redis():
    async def take(clients: list[Redis]) -> list[int | None]:
        limits = SharedGatewayLimits(clients[0])
        return [await limits.take(Gateway("unlimited")) for _ in range(3)]

    before = sample("wai_store_failures_total", store="redis", operation="gateway limits")
    assert with_replicas(unreachable(), 1, take) == [None, None, None]
    assert sample("wai_store_failures_total", store="redis", operation="gateway limits") == before


def test_the_script_is_loaded_again_after_redis_forgot_it(redis_store):
    redis_store.flush()
    gateway = replace(SLIDING, id="shared-noscript", rate_limiting_limit=1)

    async def take(clients: list[Redis]) -> list[int | None]:
        limits = SharedGatewayLimits(clients[0])
        first = await limits.take(gateway)
        await clients[0].client.script_flush()
        return [first, await limits.take(gateway)]

    taken = with_replicas(redis_store.url, 1, take)
    assert taken[0] is None and taken[1] is not None and taken[1] >= 3600


def test_an_unreachable_redis_counts_in_this_replica_alone():
    unshared = sample("wai_gateway_limits_unshared_total", gateway="alone")
    gateway = replace(SLIDING, id="alone", rate_limiting_limit=2)

    async def take(clients: list[Redis]) -> list[int | None]:
        limits = SharedGatewayLimits(clients[0])
        return [await limits.take(gateway) for _ in range(3)]

    taken = with_replicas(unreachable(), 1, take)
    assert taken[:2] == [None, None] and taken[2] is not None and taken[2] >= 3600
    assert sample("wai_gateway_limits_unshared_total", gateway="alone") - unshared == 3
