"""What one request asks of its gateway, in the client's words, and how that meets the gateway's settings.

protocol/gateway.py reads these options from `cf-aig-*` headers, from a Workers binding's
`options.gateway` and from a universal step's `config`; the request's own options win over the
gateway's settings, as Cloudflare's do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from server.serving.gateways import Gateway

# With a cache key of its own and no TTL from the request or the gateway, an answer is kept this long.
CACHE_KEY_TTL_S = 300
# Between attempts when neither the request nor the gateway says: an overloaded engine's Retry-After.
DEFAULT_RETRY_DELAY_MS = 1000


@dataclass(frozen=True)
class CustomCost:
    """`cf-aig-custom-cost`: US dollars per token in and out, or the request's total."""

    per_token_in: float | None = None
    per_token_out: float | None = None
    total_cost: float | None = None

    def of(self, tokens_in: int, tokens_out: int) -> float:
        if self.total_cost is not None:
            return self.total_cost
        return tokens_in * (self.per_token_in or 0.0) + tokens_out * (self.per_token_out or 0.0)


@dataclass(frozen=True)
class GatewayOptions:
    """A request's gateway options; None: the gateway's setting (or the default) applies."""

    cache_ttl_s: int | None = None
    skip_cache: bool = False
    cache_key: str | None = None
    collect_log: bool | None = None
    collect_log_payload: bool = True
    metadata: dict[str, str | int | float | bool] = field(default_factory=dict)
    custom_cost: CustomCost | None = None
    event_id: str | None = None
    request_timeout_ms: int | None = None
    max_attempts: int | None = None
    retry_delay_ms: int | None = None
    backoff: str | None = None
    authorization: str | None = None  # `cf-aig-authorization`'s token, for a gateway with authentication

    def over(self, base: GatewayOptions) -> GatewayOptions:
        """These options where given, `base`'s elsewhere: a universal step's own over the request's."""
        mine, theirs = self.__dict__, base.__dict__
        unset = GatewayOptions().__dict__
        return GatewayOptions(**{name: mine[name] if mine[name] != unset[name] else theirs[name] for name in mine})

    def cache_ttl(self, gateway: Gateway) -> int:
        """Seconds to keep this request's answer; 0: not cached."""
        if self.skip_cache:
            return 0
        ttl = self.cache_ttl_s if self.cache_ttl_s is not None else gateway.cache_ttl
        if not ttl and self.cache_key is not None:
            return CACHE_KEY_TTL_S
        return ttl or 0

    def collects_log(self, gateway: Gateway) -> bool:
        return gateway.collect_logs if self.collect_log is None else self.collect_log

    def attempts(self, gateway: Gateway) -> int:
        return self.max_attempts or gateway.retry_max_attempts or 1

    def delay_before_retry(self, retry: int, gateway: Gateway) -> float:
        """Seconds to wait before retry number `retry` (1 for the second attempt), by the backoff."""
        delay_ms = self.retry_delay_ms if self.retry_delay_ms is not None else gateway.retry_delay
        delay_s = (DEFAULT_RETRY_DELAY_MS if delay_ms is None else delay_ms) / 1000
        backoff = self.backoff or gateway.retry_backoff or "constant"
        if backoff == "linear":
            return delay_s * retry
        if backoff == "exponential":
            return delay_s * 2 ** (retry - 1)
        return delay_s

    def timeout_s(self) -> float | None:
        """The time an attempt may take to its first byte, None: no bound but the request's own."""
        return None if self.request_timeout_ms is None else self.request_timeout_ms / 1000
