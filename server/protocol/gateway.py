"""The AI Gateway's wire format: its options, its universal steps and its own error body.

Its `cf-aig-*` headers, a Workers binding's `options.gateway` and the universal endpoint's steps
(docs/compatibility.md, "AI Gateway").

Every form reads into one `GatewayOptions` (serving/gateway_policy.py). A value out of its range is
a 400 naming the header; metadata past five entries is dropped, as Cloudflare drops it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from server import errors
from server.serving.gateway_policy import CustomCost, GatewayOptions

# What a request may send.
GATEWAY_ID = "cf-aig-gateway-id"  # the gateway of a request to the REST routes (/client/v4/.../ai/...)
AUTHORIZATION = "cf-aig-authorization"
CACHE_TTL = "cf-aig-cache-ttl"
SKIP_CACHE = "cf-aig-skip-cache"
CACHE_KEY = "cf-aig-cache-key"
COLLECT_LOG = "cf-aig-collect-log"
COLLECT_LOG_PAYLOAD = "cf-aig-collect-log-payload"
METADATA = "cf-aig-metadata"
CUSTOM_COST = "cf-aig-custom-cost"
EVENT_ID = "cf-aig-event-id"
REQUEST_TIMEOUT = "cf-aig-request-timeout"
MAX_ATTEMPTS = "cf-aig-max-attempts"
RETRY_DELAY = "cf-aig-retry-delay"
BACKOFF = "cf-aig-backoff"
# Cloudflare's older names, which still work there.
LEGACY_NAMES = {CACHE_TTL: "cf-cache-ttl", SKIP_CACHE: "cf-skip-cache"}

# What every answer through a gateway carries.
CACHE_STATUS = "cf-aig-cache-status"  # HIT or MISS
LOG_ID = "cf-aig-log-id"  # workerd keeps it as env.AI.aiGatewayLogId
STEP = "cf-aig-step"  # the universal step that answered; 0 for the others

MIN_CACHE_TTL_S = 60
MAX_CACHE_TTL_S = 30 * 86400  # a month
MAX_ATTEMPTS_LIMIT = 5
MAX_RETRY_DELAY_MS = 5000
BACKOFFS = ("constant", "linear", "exponential")
MAX_METADATA_ENTRIES = 5

PROVIDER = "workers-ai"  # the one provider a wai gateway serves


def options_from_headers(headers: Mapping[str, str]) -> GatewayOptions:
    """The options in a request's (or a universal step's) `cf-aig-*` headers."""

    def sent(name: str) -> str | None:
        value = headers.get(name)
        return headers.get(LEGACY_NAMES[name]) if value is None and name in LEGACY_NAMES else value

    def flag(name: str) -> bool | None:
        value = sent(name)
        if value is None:
            return None
        if value.lower() not in ("true", "false"):
            raise errors.bad_input(f"the {name} header must be true or false, not {value!r}")
        return value.lower() == "true"

    def whole(name: str) -> int | None:
        value = sent(name)
        if value is None:
            return None
        if not value.strip().isdigit():
            raise errors.bad_input(f"the {name} header must be a whole number, not {value!r}")
        return int(value)

    return _checked(
        GatewayOptions(
            cache_ttl_s=whole(CACHE_TTL),
            skip_cache=flag(SKIP_CACHE) or False,
            cache_key=sent(CACHE_KEY),
            collect_log=flag(COLLECT_LOG),
            collect_log_payload=flag(COLLECT_LOG_PAYLOAD) is not False,
            metadata=_metadata(_json_header(METADATA, sent(METADATA))),
            custom_cost=_custom_cost(_json_header(CUSTOM_COST, sent(CUSTOM_COST))),
            event_id=sent(EVENT_ID),
            request_timeout_ms=whole(REQUEST_TIMEOUT),
            max_attempts=whole(MAX_ATTEMPTS),
            retry_delay_ms=whole(RETRY_DELAY),
            backoff=sent(BACKOFF),
            authorization=_bearer(sent(AUTHORIZATION)),
        )
    )


def options_from_binding(gateway: Any) -> tuple[str, GatewayOptions]:
    """A binding call's `options.gateway` (`{id, cacheKey, cacheTtl, skipCache, metadata, collectLog,
    eventId, requestTimeoutMs, retries: {maxAttempts, retryDelayMs, backoff}}`): its id and options."""
    if not isinstance(gateway, dict) or not isinstance(gateway.get("id"), str) or not gateway["id"]:
        raise errors.bad_input("options.gateway must be an object with the gateway's id", param="gateway")
    retries = gateway.get("retries") or {}
    if not isinstance(retries, dict):
        raise errors.bad_input("options.gateway.retries must be an object", param="gateway")
    return gateway["id"], _checked(
        GatewayOptions(
            cache_ttl_s=_number(gateway, "cacheTtl"),
            skip_cache=_boolean(gateway, "skipCache") or False,
            cache_key=_text(gateway, "cacheKey"),
            collect_log=_boolean(gateway, "collectLog"),
            metadata=_metadata(gateway.get("metadata")),
            event_id=_text(gateway, "eventId"),
            request_timeout_ms=_number(gateway, "requestTimeoutMs"),
            max_attempts=_number(retries, "maxAttempts"),
            retry_delay_ms=_number(retries, "retryDelayMs"),
            backoff=_text(retries, "backoff"),
        )
    )


@dataclass(frozen=True)
class Step:
    """One step of a universal request: a wai model (`endpoint` a model name, answered as the run
    endpoint) or an OpenAI route (`endpoint` `v1/chat/completions`, the model in its body)."""

    endpoint: str
    body: Any
    options: GatewayOptions


def universal_steps(body: Any) -> list[Step]:
    """The universal endpoint's body: one step or an array of them, `{provider, endpoint, headers,
    query, config?}`, each tried in turn."""
    steps = body if isinstance(body, list) else [body]
    if not steps:
        raise errors.bad_input("the universal endpoint's body is an array of at least one step")
    return [_step(index, step) for index, step in enumerate(steps)]


def _step(index: int, step: Any) -> Step:
    where = f"step {index}"
    if not isinstance(step, dict):
        raise errors.bad_input(f"{where} must be an object with provider, endpoint, headers and query")
    if step.get("provider") != PROVIDER:
        raise errors.bad_input(f"{where}: this gateway serves the provider {PROVIDER!r} only", param="provider")
    endpoint = step.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint.strip("/"):
        raise errors.bad_input(f"{where}: endpoint must name a model or an OpenAI route", param="endpoint")
    headers = step.get("headers") or {}
    config = step.get("config") or {}
    if not isinstance(headers, dict) or not isinstance(config, dict):
        raise errors.bad_input(f"{where}: headers and config must be objects")
    from_headers = options_from_headers({str(name).lower(): _header_text(value) for name, value in headers.items()})
    from_config = _checked(
        GatewayOptions(
            request_timeout_ms=_number(config, "requestTimeout"),
            max_attempts=_number(config, "maxAttempts"),
            retry_delay_ms=_number(config, "retryDelay"),
            backoff=_text(config, "backoff"),
        )
    )
    return Step(endpoint=endpoint.strip("/"), body=step.get("query"), options=from_config.over(from_headers))


def compat_model(model: Any) -> Any:
    """The model of the compat route's `{provider}/{model}` name; other providers are not served here."""
    if not isinstance(model, str):
        return model
    provider, _, name = model.partition("/")
    if provider != PROVIDER or not name:
        raise errors.bad_input(f"model must be {PROVIDER}/<model> on this gateway, not {model!r}", param="model")
    return name


def failure(error: errors.WaiError) -> dict[str, Any]:
    """The gateway's own error, `AiGatewayError`, with every key any of its clients reads: the
    v4 envelope's, the binding's `internalCode`/`description`, and `error` as Cloudflare spells it."""
    entry = {"code": error.code, "message": error.message}
    return {
        "success": False,
        "result": [],
        "messages": [],
        "error": [entry],
        "errors": [entry],
        "name": "AiGatewayError",
        "httpCode": error.status,
        "internalCode": error.code,
        "message": error.message,
        "description": error.message,
    }


def _checked(options: GatewayOptions) -> GatewayOptions:
    """400 for a value out of Cloudflare's ranges."""
    ttl = options.cache_ttl_s
    if ttl is not None and not MIN_CACHE_TTL_S <= ttl <= MAX_CACHE_TTL_S:
        raise errors.bad_input(f"{CACHE_TTL} must be from {MIN_CACHE_TTL_S} to {MAX_CACHE_TTL_S} seconds, not {ttl}")
    attempts = options.max_attempts
    if attempts is not None and not 1 <= attempts <= MAX_ATTEMPTS_LIMIT:
        raise errors.bad_input(f"{MAX_ATTEMPTS} must be from 1 to {MAX_ATTEMPTS_LIMIT}, not {attempts}")
    delay = options.retry_delay_ms
    if delay is not None and not 0 <= delay <= MAX_RETRY_DELAY_MS:
        raise errors.bad_input(f"{RETRY_DELAY} must be from 0 to {MAX_RETRY_DELAY_MS} milliseconds, not {delay}")
    if options.backoff is not None and options.backoff not in BACKOFFS:
        raise errors.bad_input(f"{BACKOFF} must be one of {', '.join(BACKOFFS)}, not {options.backoff!r}")
    timeout = options.request_timeout_ms
    if timeout is not None and timeout < 1:
        raise errors.bad_input(f"{REQUEST_TIMEOUT} must be at least 1 millisecond")
    return options


def _json_header(name: str, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError as exc:
        raise errors.bad_input(f"the {name} header must be JSON: {exc}") from exc


def _metadata(value: Any) -> dict[str, str | int | float | bool]:
    """String, number and boolean values; the first five entries kept, the rest dropped."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise errors.bad_input(f"{METADATA} must be a JSON object")
    kept: dict[str, str | int | float | bool] = {}
    for key, entry in value.items():
        if entry is None:
            continue
        if not isinstance(entry, str | int | float | bool):
            raise errors.bad_input(f"{METADATA} values must be strings, numbers or booleans; {key!r} is not")
        if "\0" in str(key) or (isinstance(entry, str) and "\0" in entry):
            raise errors.bad_input(f"{METADATA} may not hold a NUL character")
        if len(kept) < MAX_METADATA_ENTRIES:
            kept[str(key)] = entry
    return kept


def _custom_cost(value: Any) -> CustomCost | None:
    if value is None:
        return None
    fields = ("per_token_in", "per_token_out", "total_cost")
    if (
        not isinstance(value, dict)
        or not value
        or any(key not in fields for key in value)
        or not all(_amount(amount) for amount in value.values())
    ):
        raise errors.bad_input(
            f'{CUSTOM_COST} must be {{"per_token_in": n, "per_token_out": n}} or {{"total_cost": n}}, n >= 0'
        )
    return CustomCost(**{key: float(amount) for key, amount in value.items()})


def _amount(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and value >= 0


def _bearer(value: str | None) -> str | None:
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else value.strip()


def _number(fields: dict[str, Any], name: str) -> int | None:
    value = fields.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise errors.bad_input(f"{name} must be a whole number", param=name)
    return int(value)


def _boolean(fields: dict[str, Any], name: str) -> bool | None:
    value = fields.get(name)
    if value is not None and not isinstance(value, bool):
        raise errors.bad_input(f"{name} must be true or false", param=name)
    return value


def _text(fields: dict[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if value is not None and not isinstance(value, str):
        raise errors.bad_input(f"{name} must be a string", param=name)
    return value


def _header_text(value: Any) -> str:
    """A universal step's header value as the binding sends it: numbers and booleans as text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value)
