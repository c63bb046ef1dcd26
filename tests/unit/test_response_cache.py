"""The AI Gateway's response cache in this process: its key, its bound in bytes, its TTLs, its metrics."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from prometheus_client import REGISTRY

from server.serving.response_cache import (
    ENTRY_OVERHEAD_BYTES,
    CachedAnswer,
    LocalResponseCache,
    cache_key,
    deserialised,
    entry_bytes,
    serialised,
)

PARTS = {"route": "/ai/run/@cf/m", "model": "@cf/m", "key_identity": "ab12", "body": b'{"prompt":"hi"}'}
ANSWER = CachedAnswer(200, "application/json", b'{"result":{"response":"hello"}}', False, {"x-wai-stand-in": "m"})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def answer_of(size: int, fill: bytes = b"x") -> CachedAnswer:
    return CachedAnswer(200, "application/json", fill * size, False)


def key(**changes: object) -> str:
    return cache_key(**{**PARTS, **changes})  # type: ignore[arg-type]


def test_the_key_changes_with_each_input():
    first = key()
    assert len(first) == 64 and int(first, 16) >= 0
    assert key() == first
    changed = [
        {"route": "/v1/chat/completions"},
        {"model": "@cf/other"},
        {"key_identity": "cd34"},
        {"body": b'{"prompt":"hi" }'},
        {"generation": "1700000000.5"},
    ]
    keys = {key(**change) for change in changed}
    assert first not in keys and len(keys) == len(changed)


def test_parts_cannot_trade_bytes():
    # Without the lengths, each pair would hash the same concatenation.
    assert key(route="ab", model="c", body=b"x") != key(route="a", model="bc", body=b"x")
    assert key(key_identity="k", body=b"1") != key(key_identity="", generation="k", body=b"1")
    assert key(generation="", body=b"g") != key(generation="g", body=b"")


def test_a_kept_answer_comes_back_whole():
    cache = LocalResponseCache(1_000_000, 1_000_000)
    streamed = CachedAnswer(200, "text/event-stream", b'data: {"response":"a"}\n\ndata: [DONE]\n\n', True)

    async def run() -> None:
        await cache.keep("gw", "k1", ANSWER, 60)
        await cache.keep("gw", "k2", streamed, 60)
        assert await cache.lookup("gw", "k1") == ANSWER
        assert await cache.lookup("gw", "k2") == streamed
        assert await cache.lookup("other-gw", "k1") is None  # a gateway sees only its own answers

    asyncio.run(run())


def test_the_least_recently_used_leave_first_past_the_bound():
    size = entry_bytes("k1", answer_of(1000))
    cache = LocalResponseCache(2 * size + 10, 1_000_000)

    async def run() -> None:
        await cache.keep("gw", "k1", answer_of(1000), 60)
        await cache.keep("gw", "k2", answer_of(1000), 60)
        assert cache.size == 2 * size
        assert await cache.lookup("gw", "k1") is not None  # k1 used last: k2 is the one to go
        await cache.keep("gw", "k3", answer_of(1000), 60)
        assert cache.size == 2 * size
        assert await cache.lookup("gw", "k2") is None
        assert await cache.lookup("gw", "k1") is not None and await cache.lookup("gw", "k3") is not None
        # One big answer pushes out as many as it needs.
        await cache.keep("gw", "k4", answer_of(1500), 60)
        assert list(cache.entries) == [("gw", "k4")]

    asyncio.run(run())


def test_keeping_a_key_again_replaces_its_answer():
    cache = LocalResponseCache(1_000_000, 1_000_000)

    async def run() -> None:
        await cache.keep("gw", "k", answer_of(10), 60)
        await cache.keep("gw", "k", answer_of(20, b"y"), 60)
        assert await cache.lookup("gw", "k") == answer_of(20, b"y")
        assert cache.size == entry_bytes("k", answer_of(20))

    asyncio.run(run())


def test_answers_expire_at_their_ttl():
    clock = Clock()
    cache = LocalResponseCache(1_000_000, 1_000_000, clock)

    async def run() -> None:
        await cache.keep("gw", "short", ANSWER, 60)
        await cache.keep("gw", "long", ANSWER, 3600)
        clock.now += 59.9
        assert await cache.lookup("gw", "short") == ANSWER
        clock.now += 0.1
        assert await cache.lookup("gw", "short") is None
        assert await cache.lookup("gw", "long") == ANSWER
        assert list(cache.entries) == [("gw", "long")]  # the expired one freed its bytes
        assert cache.size == entry_bytes("long", ANSWER)

    asyncio.run(run())


@pytest.mark.parametrize("ttl_s", [0, -1])
def test_no_ttl_keeps_nothing(ttl_s):
    cache = LocalResponseCache(1_000_000, 1_000_000)
    asyncio.run(cache.keep("gw", "k", ANSWER, ttl_s))
    assert not cache.entries


def test_answers_over_the_largest_are_not_kept():
    cache = LocalResponseCache(1_000_000, 100)

    async def run() -> None:
        await cache.keep("gw", "fits", answer_of(100), 60)
        await cache.keep("gw", "over", answer_of(101), 60)
        assert await cache.lookup("gw", "fits") is not None
        assert await cache.lookup("gw", "over") is None

    asyncio.run(run())


def test_an_answer_larger_than_the_whole_cache_leaves_the_others_in_place():
    cache = LocalResponseCache(entry_bytes("k", answer_of(100)), 1_000_000)

    async def run() -> None:
        await cache.keep("gw", "k", answer_of(100), 60)
        await cache.keep("gw", "huge", answer_of(101), 60)
        assert list(cache.entries) == [("gw", "k")]

    asyncio.run(run())


def test_a_cache_of_zero_bytes_keeps_nothing():
    cache = LocalResponseCache(0, 1_000_000)

    async def run() -> None:
        await cache.keep("gw", "k", answer_of(1), 60)
        assert await cache.lookup("gw", "k") is None
        assert cache.size == 0

    asyncio.run(run())


def test_lookups_count_hits_misses_and_bytes_served():
    cache = LocalResponseCache(1_000_000, 1_000_000)
    gateway = "metrics-gw"
    before = {
        "hit": sample("wai_gateway_cache_lookups_total", gateway=gateway, outcome="hit"),
        "miss": sample("wai_gateway_cache_lookups_total", gateway=gateway, outcome="miss"),
        "served": sample("wai_gateway_cache_served_bytes_total", gateway=gateway),
    }

    async def run() -> None:
        assert await cache.lookup(gateway, "k") is None
        await cache.keep(gateway, "k", ANSWER, 60)
        assert sample("wai_gateway_cache_bytes") == entry_bytes("k", ANSWER)
        for _ in range(2):
            assert await cache.lookup(gateway, "k") == ANSWER

    asyncio.run(run())
    assert sample("wai_gateway_cache_lookups_total", gateway=gateway, outcome="hit") - before["hit"] == 2
    assert sample("wai_gateway_cache_lookups_total", gateway=gateway, outcome="miss") - before["miss"] == 1
    served = sample("wai_gateway_cache_served_bytes_total", gateway=gateway) - before["served"]
    assert served == 2 * len(ANSWER.body)


def test_an_entry_costs_its_body_its_strings_and_the_overhead():
    strings = len("k") + len(ANSWER.media_type) + len("x-wai-stand-in") + len("m")
    assert entry_bytes("k", ANSWER) == len(ANSWER.body) + strings + ENTRY_OVERHEAD_BYTES


@pytest.mark.parametrize(
    "answer",
    [
        ANSWER,
        CachedAnswer(200, "text/event-stream", b"data: x\n\n\n\xff\x00", True),
        replace(ANSWER, body=b"", headers={}),
        CachedAnswer(404, "application/json; charset=utf-8", b"{}", False, {"a\nb": "new\nline"}),
    ],
)
def test_the_stored_form_gives_back_the_answer(answer):
    assert deserialised(serialised(answer)) == answer
    assert serialised(answer).endswith(answer.body)  # the body as its own bytes, not encoded
