"""The AI Gateway's response cache: answers kept by key for a TTL, replayed without engine work.

In this process by default (least recently used first out, bounded in bytes by
`gateways.cache_max_bytes`); in Redis with `redis_url`, shared by every replica, each entry a string
set with its TTL (Redis's own `maxmemory` policy bounds them there). A cache is volatile, as
Cloudflare's is: two identical requests at once may both miss, and an unreachable Redis is a miss and
a store skipped, never an error.

A key is a SHA-256 digest over everything that makes two requests the same question (`cache_key`):
the route, the model, the caller's key identity, the gateway's generation and the whole body.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import orjson

from server import metrics
from server.config import Settings
from server.stores.redis import Redis, StoreDown

HIT, MISS = "hit", "miss"
# Bytes an in-process entry costs beyond its body and headers: the key, the bookkeeping objects.
ENTRY_OVERHEAD_BYTES = 256


@dataclass(frozen=True)
class CachedAnswer:
    """An answer as it was sent: whole (JSON) or the bytes of its event stream."""

    status: int
    media_type: str
    body: bytes
    streamed: bool
    headers: dict[str, str] = field(default_factory=dict)  # the answer's own (x-wai-stand-in), none of the request's


def cache_key(*, route: str, model: str, key_identity: str, body: bytes, generation: str = "") -> str:
    """The cache key of a request, as SHA-256 hex. Each part is prefixed by its length, so that no two
    different sets of parts encode alike (route "ab" + model "c" never meets route "a" + model "bc").
    `key_identity` is a digest of the caller's key, never the key; `generation` changes when a gateway
    that invalidates its cache on update is updated."""
    digest = hashlib.sha256(b"wai-gateway-cache-1")
    for part in (route.encode(), model.encode(), key_identity.encode(), generation.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class ResponseCache(Protocol):
    async def lookup(self, gateway_id: str, key: str) -> CachedAnswer | None:
        """The answer kept for `key` in the gateway's cache, unless it expired; counted as a hit or a miss."""
        ...

    async def keep(self, gateway_id: str, key: str, answer: CachedAnswer, ttl_s: float) -> None:
        """Keep `answer` for `ttl_s` seconds, unless its body is over `gateways.max_cached_answer_bytes`."""
        ...


def build_response_cache(settings: Settings, redis: Redis | None) -> ResponseCache:
    """In Redis when there is one (every replica shares it), else in this process."""
    if redis is not None:
        return RedisResponseCache(redis, settings.gateways.max_cached_answer_bytes)
    return LocalResponseCache(settings.gateways.cache_max_bytes, settings.gateways.max_cached_answer_bytes)


def counted(gateway_id: str, answer: CachedAnswer | None) -> CachedAnswer | None:
    """`answer`, counted in the cache's metrics as a hit (with its bytes) or, when None, a miss."""
    metrics.GATEWAY_CACHE_LOOKUPS.labels(gateway_id, MISS if answer is None else HIT).inc()
    if answer is not None:
        metrics.GATEWAY_CACHE_SERVED_BYTES.labels(gateway_id).inc(len(answer.body))
    return answer


def entry_bytes(key: str, answer: CachedAnswer) -> int:
    """What an entry costs the in-process cache, roughly: its body, its strings and a fixed overhead."""
    strings = len(key) + len(answer.media_type) + sum(len(name) + len(value) for name, value in answer.headers.items())
    return len(answer.body) + strings + ENTRY_OVERHEAD_BYTES


@dataclass
class _Entry:
    answer: CachedAnswer
    expires_at: float
    size: int


class LocalResponseCache:
    """Answers in this process, least recently used first out past `max_bytes` (0: none kept).
    `clock` is monotonic seconds (tests pass their own)."""

    def __init__(self, max_bytes: int, max_answer_bytes: int, clock: Callable[[], float] = time.monotonic):
        self.max_bytes = max_bytes
        self.max_answer_bytes = max_answer_bytes
        self.clock = clock
        self.entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self.size = 0
        metrics.GATEWAY_CACHE_BYTES.set(0)

    async def lookup(self, gateway_id: str, key: str) -> CachedAnswer | None:
        entry = self.entries.get((gateway_id, key))
        if entry is not None and entry.expires_at <= self.clock():
            self._drop((gateway_id, key))
            entry = None
        if entry is not None:
            self.entries.move_to_end((gateway_id, key))
        return counted(gateway_id, entry.answer if entry is not None else None)

    async def keep(self, gateway_id: str, key: str, answer: CachedAnswer, ttl_s: float) -> None:
        size = entry_bytes(key, answer)
        if ttl_s <= 0 or len(answer.body) > self.max_answer_bytes or size > self.max_bytes:
            return
        self._drop((gateway_id, key))
        self.entries[(gateway_id, key)] = _Entry(answer, self.clock() + ttl_s, size)
        self.size += size
        while self.size > self.max_bytes:
            self._drop(next(iter(self.entries)))
        metrics.GATEWAY_CACHE_BYTES.set(self.size)

    def _drop(self, name: tuple[str, str]) -> None:
        entry = self.entries.pop(name, None)
        if entry is not None:
            self.size -= entry.size
            metrics.GATEWAY_CACHE_BYTES.set(self.size)


def redis_name(gateway_id: str, key: str) -> str:
    return f"wai:gateway:{gateway_id}:cache:{key}"


def serialised(answer: CachedAnswer) -> bytes:
    """One line of JSON with everything but the body, a newline, then the body's own bytes (JSON
    escapes every newline in the line, so the first one ends it)."""
    head = {"s": answer.status, "m": answer.media_type, "t": answer.streamed, "h": answer.headers}
    return orjson.dumps(head) + b"\n" + answer.body


def deserialised(value: bytes) -> CachedAnswer:
    head, _, body = value.partition(b"\n")
    fields = orjson.loads(head)
    return CachedAnswer(fields["s"], fields["m"], body, fields["t"], fields["h"])


class RedisResponseCache:
    """Answers in Redis, shared by every replica; while Redis is unreachable, every lookup misses and
    nothing is kept (counted in `wai_store_failures_total{operation="response cache"}`)."""

    OPERATION = "response cache"

    def __init__(self, redis: Redis, max_answer_bytes: int):
        self.redis = redis
        self.max_answer_bytes = max_answer_bytes

    async def lookup(self, gateway_id: str, key: str) -> CachedAnswer | None:
        name = redis_name(gateway_id, key)
        try:
            value = await self.redis.call(self.OPERATION, lambda: self.redis.client.get(name))
        except StoreDown:
            value = None
        # The client answers bytes (it is made without decode_responses); its type says bytes or str.
        return counted(gateway_id, deserialised(value) if isinstance(value, bytes) else None)

    async def keep(self, gateway_id: str, key: str, answer: CachedAnswer, ttl_s: float) -> None:
        if ttl_s <= 0 or len(answer.body) > self.max_answer_bytes:
            return
        name, value, seconds = redis_name(gateway_id, key), serialised(answer), max(1, math.ceil(ttl_s))
        try:
            await self.redis.call(self.OPERATION, lambda: self.redis.client.set(name, value, ex=seconds))
        except StoreDown:
            pass  # a cache that could not keep an answer only answers the next request from the engine
