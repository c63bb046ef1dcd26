"""Keys' limits shared by every replica through Redis (`redis_url`): one script, one round trip.

A limited key's request runs one Lua script, atomically in Redis: it refills the key's token bucket
from Redis's own clock (replicas' clocks never matter), drops the key's in-flight entries that
expired, and then either takes one token and one place in flight or takes nothing and says how many
seconds to wait. In-flight places are members of a sorted set scored by when they expire (the
request's timeout and a margin), so a replica that dies mid-request loses its places by itself.
Redis names are built from the key's sha256 digest, never the key, and expire once idle.

The script is sent once by its sha1 (EVALSHA); when Redis answers NOSCRIPT (restarted, flushed) it
is loaded again. Whether a request may go on is decided in server/auth.py.
"""

from __future__ import annotations

import hashlib

import redis.exceptions

from server.stores.redis import Redis

# What a request may outlive its timeout by before its place counts as abandoned: the last bytes
# of an answer still on their way to the client.
HOLD_MARGIN_S = 5.0

# KEYS: the key's bucket (a hash: tokens, at), its places in flight (a sorted set: member -> expiry).
# ARGV: requests per minute (0: none), most in flight (0: none), this request's member, hold seconds.
# Answers 0 when it took a token and a place, else the seconds to wait (as server/auth.py's own counters).
TAKE = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local rate, most, hold = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
local tokens
if rate > 0 then
  local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
  tokens = tonumber(bucket[1])
  if tokens == nil then
    tokens = rate
  else
    tokens = math.min(rate, tokens + math.max(0, now - tonumber(bucket[2])) * rate / 60)
  end
  if tokens < 1 then
    return math.ceil((1 - tokens) * 60 / rate)
  end
end
if most > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= most then
    return 1
  end
  redis.call('ZADD', KEYS[2], string.format('%.6f', now + hold), ARGV[3])
  redis.call('EXPIRE', KEYS[2], math.ceil(hold) + 1)
end
if rate > 0 then
  redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens - 1), 'at', string.format('%.6f', now))
  redis.call('EXPIRE', KEYS[1], 61) -- a bucket left alone for a minute is full: as good as absent
end
return 0
"""
TAKE_SHA = hashlib.sha1(TAKE.encode()).hexdigest()


def redis_names(key_digest: bytes) -> tuple[str, str]:
    """The key's bucket and its places in flight; `{digest}` keeps both in one Redis Cluster slot."""
    prefix = f"wai:key:{{{key_digest.hex()}}}"
    return f"{prefix}:rate", f"{prefix}:in-flight"


class SharedKeyLimits:
    """Keys' limits counted in Redis. Every call may raise StoreDown (server/stores/redis.py)."""

    def __init__(self, redis: Redis, request_timeout_s: float):
        self.redis = redis
        self.hold_s = request_timeout_s + HOLD_MARGIN_S

    async def take(self, key_digest: bytes, per_minute: int | None, most: int | None, member: str) -> int:
        """0 when the request took a token and a place in flight (as `member`), else the seconds to wait."""
        args = (per_minute or 0, most or 0, member, self.hold_s)
        return int(await self.redis.call("key limits", lambda: self._run_take(redis_names(key_digest), args)))

    async def _run_take(self, names: tuple[str, str], args: tuple[int, int, str, float]) -> int:
        client = self.redis.client
        try:
            return await client.evalsha(TAKE_SHA, len(names), *names, *args)
        except redis.exceptions.NoScriptError:  # Redis restarted or flushed its scripts: load it again
            await client.script_load(TAKE)
            return await client.evalsha(TAKE_SHA, len(names), *names, *args)

    async def give_back(self, key_digest: bytes, member: str) -> None:
        _, in_flight = redis_names(key_digest)
        await self.redis.call("key limits", lambda: self.redis.client.zrem(in_flight, member))
