"""The gateways API's wire format: a gateway object as Cloudflare's API reads and writes it.

A create body carries the gateway's `id`; an update body (PUT, a replace) does not. Both must hold
Cloudflare's required settings (`cache_invalidate_on_update`, `cache_ttl`, `collect_logs`,
`rate_limiting_interval`, `rate_limiting_limit`), which the cloudflare SDK's `ai_gateway.create` and
`update` always send; `null` is accepted for every nullable one. The settings wai acts on are checked
against the ranges of a declared gateway's (`GatewayConfig` in server/config.py, the one place they are
written); Cloudflare's other settings (otel, dlp, guardrails, ...) are checked for their type only and
kept as sent. A mistake answers 400 / 7001 "Input Validation Error", with the field's `path` and a
sentence saying what is wrong (docs/compatibility.md, "AI Gateway").

A gateway is answered with every field of Cloudflare's object, its times as ISO-8601 UTC strings, and
the account it was asked under as `account_id` and `account_tag`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from server import errors
from server.config import GatewayConfig
from server.serving.gateways import DEFAULT_GATEWAY, Gateway

# Required in a create body (with `id`) and in an update body, by Cloudflare's API and its SDKs.
REQUIRED = (
    "cache_invalidate_on_update",
    "cache_ttl",
    "collect_logs",
    "rate_limiting_interval",
    "rate_limiting_limit",
)

# The settings wai acts on, checked as a declared gateway's are; `authentication` is not declarable.
ACTED_ON = tuple(name for name in GatewayConfig.model_fields if name != "id")
AUTHENTICATION = "authentication"

# What the server sets: ignored in a body (a client may send back an object it read).
SERVER_SET = frozenset({"id", "created_at", "modified_at", "is_default", "account_id", "account_tag", "internal_id"})


def _boolean(value: Any) -> bool:
    return isinstance(value, bool)


def _nullable(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def _object(value: Any) -> bool:
    return isinstance(value, dict)


def _public_key(value: Any) -> bool:
    return isinstance(value, str) and 16 <= len(value) <= 1024


def _otel(value: Any) -> bool:
    return isinstance(value, list) and len(value) <= 5 and all(isinstance(item, dict) for item in value)


# Cloudflare's settings that wai keeps and returns without acting on them: what each must be.
KEPT: dict[str, tuple[Callable[[Any], bool], str]] = {
    "byok_only": (_boolean, "a boolean"),
    "log_classification": (_boolean, "a boolean"),
    "logpush": (_boolean, "a boolean"),
    "zdr": (_boolean, "a boolean"),
    "logpush_public_key": (_nullable(_public_key), "a string of 16 to 1024 characters, or null"),
    "store_id": (_nullable(lambda value: isinstance(value, str)), "a string or null"),
    "workers_ai_billing_mode": (lambda value: value in ("postpaid", "unified"), "'postpaid' or 'unified'"),
    "otel": (_nullable(_otel), "an array of at most 5 objects, or null"),
    "dlp": (_object, "an object"),
    "guardrails": (_nullable(_object), "an object or null"),
    "spend_limits": (_nullable(_object), "an object or null"),
    "stripe": (_nullable(_object), "an object or null"),
}

# What an object answers for a kept setting never sent (Cloudflare's defaults); `dlp` is left out.
KEPT_DEFAULTS: dict[str, Any] = {
    "byok_only": False,
    "log_classification": False,
    "logpush": False,
    "logpush_public_key": None,
    "zdr": False,
    "store_id": None,
    "workers_ai_billing_mode": "postpaid",
    "otel": None,
    "guardrails": None,
    "spend_limits": None,
    "stripe": None,
}

# `internal_id` of a gateway that has none stored (a declared one): the same on every replica.
INTERNAL_IDS = uuid.UUID("6f1d2c3e-7a4b-4c59-9e0f-2b8d5a6c7e10")


def parse_create(body: Any) -> Gateway:
    """A create body (POST): the new gateway, `id` included; 400 / 7001 where it does not validate."""
    settings = _object_body(body)
    if "id" not in settings:
        raise _invalid("id", "id is required")
    return _parse(settings, settings["id"], with_id=True)


def parse_update(body: Any, gateway_id: str) -> Gateway:
    """An update body (PUT, a replace) for the gateway at `gateway_id`. An `id` in it is ignored when it
    is the same, refused when it names another gateway."""
    settings = _object_body(body)
    if "id" in settings and settings["id"] != gateway_id:
        raise _invalid("id", f"id must be the gateway's own ({gateway_id!r}) or left out")
    return _parse(settings, gateway_id, with_id=False)


def _object_body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise errors.gateway_input_invalid("the body must be a JSON object", ("body",))
    return body


def _parse(settings: dict[str, Any], gateway_id: Any, with_id: bool) -> Gateway:
    for name in REQUIRED:
        if name not in settings:
            raise _invalid(name, f"{name} is required")
    acted_on = {name: settings[name] for name in ACTED_ON if name in settings}
    # An update's id is the URL's, which the store looks up (404 when it names none): not checked here.
    checked_id = gateway_id if with_id else DEFAULT_GATEWAY
    try:
        checked = GatewayConfig.model_validate({"id": checked_id, **acted_on}, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "body"
        raise _invalid(name, f"{name}: {first['msg']}") from exc
    authentication = settings.get(AUTHENTICATION, False)
    if not isinstance(authentication, bool):
        raise _invalid(AUTHENTICATION, f"{AUTHENTICATION} must be a boolean")
    return Gateway(
        **{**checked.model_dump(), "id": gateway_id},
        authentication=authentication,
        other=_kept(settings),
    )


def _kept(settings: dict[str, Any]) -> dict[str, Any]:
    """Cloudflare's settings wai does not act on, checked for their type, and any newer ones, as sent."""
    kept = {}
    for name, value in settings.items():
        if name in SERVER_SET or name in ACTED_ON or name == AUTHENTICATION:
            continue
        if name in KEPT:
            valid, what = KEPT[name]
            if not valid(value):
                raise _invalid(name, f"{name} must be {what}")
        kept[name] = value
    return kept


def _invalid(name: str, detail: str) -> errors.WaiError:
    return errors.gateway_input_invalid(detail, ("body", name))


def render(gateway: Gateway, account_id: str) -> dict[str, Any]:
    """The gateway as Cloudflare answers it, under the account it was asked for."""
    return {
        "id": gateway.id,
        "account_id": account_id,
        "account_tag": account_id,
        "internal_id": internal_id(gateway),
        "created_at": timestamp(gateway.created_at),
        "modified_at": timestamp(gateway.modified_at),
        "is_default": gateway.id == DEFAULT_GATEWAY,
        "cache_invalidate_on_update": gateway.cache_invalidate_on_update,
        "cache_ttl": gateway.cache_ttl,
        "collect_logs": gateway.collect_logs,
        "rate_limiting_interval": gateway.rate_limiting_interval,
        "rate_limiting_limit": gateway.rate_limiting_limit,
        "rate_limiting_technique": gateway.rate_limiting_technique,
        "retry_max_attempts": gateway.retry_max_attempts,
        "retry_delay": gateway.retry_delay,
        "retry_backoff": gateway.retry_backoff,
        "log_management": gateway.log_management,
        "log_management_strategy": gateway.log_management_strategy,
        AUTHENTICATION: gateway.authentication,
        **KEPT_DEFAULTS,
        **gateway.other,
    }


def internal_id(gateway: Gateway) -> str:
    return gateway.internal_id or str(uuid.uuid5(INTERNAL_IDS, gateway.id))


def timestamp(seconds: float) -> str:
    """Wall-clock seconds as Cloudflare writes times: ISO-8601 in UTC, to the millisecond."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def gateway_url(base_url: str, account_id: str, gateway_id: str, provider: str) -> str:
    """Where this server answers for `gateway_id` and `provider`, as Cloudflare's
    `https://gateway.ai.cloudflare.com/v1/{account}/{gateway}/{provider}`."""
    return f"{base_url.rstrip('/')}/v1/{account_id}/{gateway_id}/{provider}"


def binding_url(url: str) -> dict[str, Any]:
    """The Workers binding's `gateway(id).getUrl(provider)` answer: the URL in an object."""
    return {"url": url}


def body_schema(with_id: bool) -> dict[str, Any]:
    """The JSON Schema of a create body (`with_id`) or an update body, for /openapi.json."""
    declared = GatewayConfig.model_json_schema()["properties"]
    properties = {name: schema for name, schema in declared.items() if with_id or name != "id"}
    properties[AUTHENTICATION] = {"type": "boolean", "default": False, "title": "Authentication"}
    return {
        "type": "object",
        "properties": properties,
        "required": [*(["id"] if with_id else []), *REQUIRED],
        "additionalProperties": True,  # Cloudflare's other settings, kept as sent
    }
