"""Bearer-key authentication, per-key limits, and the rule that an open server only listens on loopback.

Keys are compared as sha256 digests, against every configured key in constant time, so timing
reveals neither a key nor its position, and a config may hold digests instead of keys. A key from
`keys:` may carry a scope (models, finetunes), a rate (requests per minute, a token bucket that
refills steadily) and a bound on its requests in flight; past either, 429 / 3040 with `Retry-After`.

With `redis_url`, a limited key's limits are counted in Redis for every replica together
(server/stores/key_limits.py). While Redis is unreachable, `cluster.key_limits_without_redis` decides:
`open` counts in this replica alone, `closed` refuses with 503 / 3048. Each request gives its place
back where it took it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fastapi import Request

from server import errors, metrics
from server.config import LOOPBACK_HOSTS, KeyConfig, Scope, Settings
from server.stores.key_limits import SharedKeyLimits
from server.stores.redis import Redis, StoreDown

log = logging.getLogger("wai.auth")


class UnsafeBind(Exception):
    """Refusing to serve without keys on a non-loopback address."""


def check_bind(host: str, has_keys: bool, insecure: bool) -> None:
    """Without keys, only loopback is safe; anything else needs keys or an explicit --insecure."""
    if has_keys:
        return
    if host in LOOPBACK_HOSTS:
        log.warning("no API keys configured: serving without authentication on loopback (%s) only", host)
        return
    if not insecure:
        raise UnsafeBind(
            f"refusing to serve on {host} without API keys: set api_keys in the config or WAI_API_KEYS, "
            "bind to 127.0.0.1, or pass --insecure"
        )
    log.warning("no API keys configured and --insecure given: anyone who reaches %s can use this server", host)


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@dataclass
class KeyUse:
    """One key's limits and what this replica has used of them."""

    config: KeyConfig | None  # None: a plain key from `api_keys`, unlimited, every scope
    digest: bytes = b""
    tokens: float = 0.0  # the rate's bucket
    refilled: float = field(default_factory=time.monotonic)
    in_flight: int = 0

    def may(self, scope: Scope) -> bool:
        return self.config is None or scope in self.config.scopes

    @property
    def limited(self) -> bool:
        return self.config is not None and (
            self.config.requests_per_minute is not None or self.config.max_concurrent is not None
        )

    def take(self) -> None:
        """Count one more request: 429 / 3040 past the key's rate or its requests in flight."""
        if self.config is None:
            return
        rate, most = self.config.requests_per_minute, self.config.max_concurrent
        if rate is not None:
            now = time.monotonic()
            self.tokens = min(rate, self.tokens + (now - self.refilled) * rate / 60)
            self.refilled = now
            if self.tokens < 1:
                raise errors.key_limited(retry_after_s=math.ceil((1 - self.tokens) * 60 / rate))
        if most is not None and self.in_flight >= most:
            raise errors.key_limited(retry_after_s=1)
        if rate is not None:
            self.tokens -= 1
        self.in_flight += 1

    def give_back(self) -> None:
        if self.config is not None:
            self.in_flight -= 1


@dataclass
class Place:
    """A request's place in its key's limits, given back when it ends where it was taken: in this
    replica's counters, or in Redis (`member`, its entry among the key's requests in flight)."""

    use: KeyUse
    shared: SharedKeyLimits | None = None
    member: str | None = None

    async def give_back(self) -> None:
        if self.shared is None:
            self.use.give_back()
        elif self.member is not None:
            try:
                await self.shared.give_back(self.use.digest, self.member)
            except StoreDown:
                pass  # its entry expires by itself (the request's timeout and a margin)


class KeyRing:
    """Every configured key, by digest, and where their limits are counted."""

    def __init__(self, settings: Settings, redis: Redis | None = None):
        self.keys: list[tuple[bytes, KeyUse]] = [(digest(key), KeyUse(None)) for key in settings.api_keys]
        for config in settings.keys:
            key_digest = digest(config.key) if config.key is not None else bytes.fromhex(config.sha256 or "")
            self.keys.append((key_digest, KeyUse(config, key_digest, tokens=config.requests_per_minute or 0)))
        scrapes = settings.metrics
        self.metrics_key = digest(scrapes.api_key) if scrapes.api_key is not None else None
        if scrapes.api_key_sha256 is not None:
            self.metrics_key = bytes.fromhex(scrapes.api_key_sha256)
        self.shared = SharedKeyLimits(redis, settings.limits.request_timeout_s) if redis is not None else None
        self.without_redis = settings.cluster.key_limits_without_redis
        self.redis_lost = False  # warned that Redis is unreachable, until it answers again

    def find(self, presented: str) -> KeyUse | None:
        presented_digest, found = digest(presented), None
        for key_digest, use in self.keys:  # every one, whatever matched: constant time
            if hmac.compare_digest(presented_digest, key_digest):
                found = use
        return found

    def opens_metrics(self, presented: str | None) -> bool:
        if self.metrics_key is None:
            return True
        return presented is not None and hmac.compare_digest(digest(presented), self.metrics_key)

    async def take(self, use: KeyUse) -> Place | None:
        """The request's place in its key's limits (None for a key without limits): 429 / 3040 past
        them, counted in Redis when there is one, else (or while it is unreachable) here."""
        if not use.limited:
            return None
        if self.shared is None:
            use.take()
            return Place(use)
        assert use.config is not None
        member = uuid.uuid4().hex
        try:
            wait_s = await self.shared.take(
                use.digest, use.config.requests_per_minute, use.config.max_concurrent, member
            )
        except StoreDown:
            return self.take_without_redis(use)
        self.redis_lost = False
        if wait_s:
            raise errors.key_limited(retry_after_s=wait_s)
        return Place(use, self.shared, member if use.config.max_concurrent is not None else None)

    def take_without_redis(self, use: KeyUse) -> Place:
        """`cluster.key_limits_without_redis`: `open` counts here alone, `closed` refuses (503 / 3048)."""
        if not self.redis_lost:
            self.redis_lost = True
            held = "held by this replica alone" if self.without_redis == "open" else "refused"
            log.warning("Redis is unreachable: limited keys' requests are %s until it answers", held)
        if self.without_redis == "closed":
            metrics.KEY_LIMITS_UNSHARED.labels("refused").inc()
            raise errors.store_unavailable("key limits")
        metrics.KEY_LIMITS_UNSHARED.labels("local").inc()
        use.take()
        return Place(use)


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def presented_key(request: Request) -> str | None:
    """The key a client sent: `Authorization: Bearer <key>`, or `x-api-key: <key>` as Anthropic's
    clients send it."""
    return bearer_token(request) or request.headers.get("x-api-key", "").strip() or None


def require_key(scope: Scope) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency: 401 / 10000 unless the request carries a key for `scope` (or no keys are
    set), 429 / 3040 past that key's limits. Its place is given back when the request ends."""

    async def dependency(request: Request) -> None:
        ring: KeyRing = request.app.state.keys
        if not ring.keys:
            return
        token = presented_key(request)
        use = ring.find(token) if token is not None else None
        if use is None or not use.may(scope):
            raise errors.authentication_error()
        place = await ring.take(use)
        if place is not None:
            request.state.key_use = place  # api/middleware.py gives it back after the last byte

    return dependency


require_api_key = require_key("models")
require_finetunes_key = require_key("finetunes")
