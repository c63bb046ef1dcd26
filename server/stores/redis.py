"""The shared counters' store (`redis_url`): one asyncio client, its timeouts, its health.

A call that fails (unreachable, or no answer within `cluster.store_timeout_s`) is counted in
`wai_store_failures_total{store="redis"}` and raises StoreDown; the caller decides what that means
(server/auth.py: `cluster.key_limits_without_redis`). The client reconnects by itself on the next call.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio
import redis.exceptions

from server import metrics

log = logging.getLogger("wai.stores")

STORE = "redis"
T = TypeVar("T")


class StoreDown(Exception):
    """Redis did not answer."""


class Redis:
    def __init__(self, url: str, timeout_s: float):
        self.client = redis.asyncio.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry_on_timeout=False,
            health_check_interval=30,
        )
        self.up = False
        metrics.STORE_UP.labels(STORE).set(0)

    async def call(self, operation: str, make_call: Callable[[], Awaitable[T]]) -> T:
        """`make_call()`'s answer; StoreDown (logged once per outage, counted every time) if Redis fails."""
        try:
            answer = await make_call()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            metrics.STORE_FAILURES.labels(STORE, operation).inc()
            metrics.STORE_UP.labels(STORE).set(0)
            if self.up:
                log.warning("Redis is unreachable (%s): %s", operation, exc)
            self.up = False
            raise StoreDown(str(exc)) from exc
        if not self.up:
            log.info("Redis answers")
        self.up = True
        metrics.STORE_UP.labels(STORE).set(1)
        return answer

    async def ping(self) -> bool:
        """Whether Redis answers now (for /readyz)."""
        try:
            await self.call("ping", self.client.ping)
        except StoreDown:
            return False
        return True

    async def close(self) -> None:
        await self.client.aclose()
