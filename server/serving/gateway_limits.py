"""AI Gateways' rate limits: at most `rate_limiting_limit` requests per `rate_limiting_interval` seconds.

`fixed` counts in clock-aligned windows (an interval of 60 s: each wall-clock minute); `sliding`
counts the requests of the last interval, in slices of a sixtieth of it, so that a gateway's count
is at most 61 numbers whatever its limit: a request counts for its interval and at most one slice
more, never less. A request past the limit is refused (429 / 2003 with `Retry-After`, the seconds
until enough of the counted requests leave the window) and is not counted.

In this process by default; with `redis_url`, in Redis for every replica together (one Lua script
per request, on Redis's own clock). While Redis is unreachable each replica counts alone, as keys'
limits do with `cluster.key_limits_without_redis: open`, until it answers again.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis.exceptions

from server import metrics
from server.config import Settings
from server.serving.gateways import Gateway
from server.stores.redis import Redis, StoreDown

log = logging.getLogger("wai.gateways")

SLICES = 60  # a sliding window's slices: its count is exact to a sixtieth of the interval
ROUNDING_S = 1e-6  # a wait of 2.0000000001 s is 2 s, not 3


@dataclass(frozen=True)
class Window:
    """How a gateway's requests are counted: in slices of `slice_s`, each slice counting until
    `after_s` past its end (fixed: 0, the slice is the window; sliding: the interval)."""

    limit: int
    slice_s: float
    after_s: float
    name: str  # where the counts are kept: changes with the technique and the interval

    def counted_until(self, index: int) -> float:
        return (index + 1) * self.slice_s + self.after_s

    def slice_at(self, now: float) -> int:
        return math.floor(now / self.slice_s)


def window_of(gateway: Gateway) -> Window:
    """The gateway's counting; `fixed` unless it says `sliding`."""
    interval, limit = float(gateway.rate_limiting_interval or 0), gateway.rate_limiting_limit or 0
    technique = "sliding" if gateway.rate_limiting_technique == "sliding" else "fixed"
    name = f"wai:gateway:{gateway.id}:rate:{technique}:{gateway.rate_limiting_interval}"
    if technique == "sliding":
        return Window(limit, interval / SLICES, interval, name)
    return Window(limit, interval, 0.0, name)


def retry_after(counts: list[tuple[int, int]], window: Window, now: float) -> int:
    """Whole seconds (at least 1) until enough of the counted requests (`(slice, requests)`, oldest
    first) leave the window for one more to fit."""
    to_free, freed = sum(requests for _, requests in counts) - window.limit + 1, 0
    for index, requests in counts:
        freed += requests
        if freed >= to_free:
            return max(1, math.ceil(window.counted_until(index) - now - ROUNDING_S))
    return 1  # unreachable while the counts are over the limit


class GatewayLimits(Protocol):
    async def take(self, gateway: Gateway) -> int | None:
        """None when the request may go on (and is counted), else the seconds to wait (at least 1)."""
        ...


def build_gateway_limits(settings: Settings, redis: Redis | None) -> GatewayLimits:
    """Counted in Redis when there is one (every replica together), else in this process."""
    if redis is not None:
        return SharedGatewayLimits(redis)
    return LocalGatewayLimits()


class LocalGatewayLimits:
    """Counts in this process. `clock` is wall-clock seconds, since fixed windows are aligned to the
    clock (tests pass their own)."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self.counts: dict[str, dict[int, int]] = {}  # window name -> slice -> requests

    async def take(self, gateway: Gateway) -> int | None:
        return self.take_here(gateway)

    def take_here(self, gateway: Gateway) -> int | None:
        if not gateway.rate_limited:
            return None
        window, now = window_of(gateway), self.clock()
        slices = self.counts.setdefault(window.name, {})
        for index in [index for index in slices if window.counted_until(index) <= now]:
            del slices[index]
        if sum(slices.values()) >= window.limit:
            return retry_after(sorted(slices.items()), window, now)
        current = window.slice_at(now)
        slices[current] = slices.get(current, 0) + 1
        return None


# KEYS: the window's slices (a hash: slice index -> requests).
# ARGV: the limit, a slice's seconds, how long a slice counts after it ends.
# Answers 0 when the request was counted, else the whole seconds to wait, as retry_after() above.
TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local limit, slice, after = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local found = redis.call('HGETALL', KEYS[1])
local counts, total = {}, 0
for n = 1, #found, 2 do
  local index, requests = tonumber(found[n]), tonumber(found[n + 1])
  if (index + 1) * slice + after <= now then
    redis.call('HDEL', KEYS[1], found[n])
  else
    counts[#counts + 1] = {index, requests}
    total = total + requests
  end
end
if total >= limit then
  table.sort(counts, function(a, b) return a[1] < b[1] end)
  local to_free, freed = total - limit + 1, 0
  for _, count in ipairs(counts) do
    freed = freed + count[2]
    if freed >= to_free then
      return math.max(1, math.ceil((count[1] + 1) * slice + after - now - 0.000001))
    end
  end
  return 1
end
redis.call('HINCRBY', KEYS[1], string.format('%.0f', math.floor(now / slice)), 1)
redis.call('EXPIRE', KEYS[1], math.ceil(slice + after) + 1) -- gone once none of its requests count
return 0
"""
TAKE_SHA = hashlib.sha1(TAKE.encode()).hexdigest()


class SharedGatewayLimits:
    """Counts in Redis, for every replica; while Redis is unreachable, in this process alone
    (counted in `wai_gateway_limits_unshared_total`)."""

    OPERATION = "gateway limits"

    def __init__(self, redis: Redis, clock: Callable[[], float] = time.time):
        self.redis = redis
        self.alone = LocalGatewayLimits(clock)
        self.redis_lost = False  # warned that Redis is unreachable, until it answers again

    async def take(self, gateway: Gateway) -> int | None:
        if not gateway.rate_limited:
            return None
        window = window_of(gateway)
        try:
            wait_s = int(await self.redis.call(self.OPERATION, lambda: self._run_take(window)))
        except StoreDown:
            return self.take_alone(gateway)
        self.redis_lost = False
        return wait_s or None

    def take_alone(self, gateway: Gateway) -> int | None:
        if not self.redis_lost:
            self.redis_lost = True
            log.warning("Redis is unreachable: gateways' rate limits are held by this replica alone until it answers")
        metrics.GATEWAY_LIMITS_UNSHARED.labels(gateway.id).inc()
        return self.alone.take_here(gateway)

    async def _run_take(self, window: Window) -> int:
        client, args = self.redis.client, (window.limit, repr(window.slice_s), repr(window.after_s))
        try:
            return await client.evalsha(TAKE_SHA, 1, window.name, *args)
        except redis.exceptions.NoScriptError:  # Redis restarted or flushed its scripts: load it again
            await client.script_load(TAKE)
            return await client.evalsha(TAKE_SHA, 1, window.name, *args)
