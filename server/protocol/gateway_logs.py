"""The AI Gateway logs API's wire format: its list and delete queries, a log as listed and shown, PATCH bodies.

Clients send the list's `filters` two ways, and both are read: Cloudflare's Python SDK writes each
field of every filter as its own repeated parameter (`filters.key=model&filters.operator=eq&
filters.value=x&filters.key=...`: keys, operators and values paired by their order only, booleans as
`true`/`false`, numbers as text), while hand-written callers send `filters=<a JSON array>` whose
`value` is one value or an array of them. The SDK flattens every filter's values into one run, so with
several filters each must carry exactly one value to be paired; and it leaves null values out. The
flat parameters the SDK still sends (`start_date`, `min_cost`, `model`, `success`, ...; deprecated by
Cloudflare) become filters too. A query that does not read is 400 / 7001 with the parameter's path.

A log is rendered as Cloudflare's list item and detail: every field the Workers binding's
`AiGatewayLog` type makes non-optional is always there, `metadata` is JSON text (the binding's own
route gets it as an object, as its type says), `duration` is in milliseconds and `created_at` an
ISO-8601 UTC instant. The stored heads are written without credentials; rendering drops credential
headers again should one be there.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from server import errors
from server.serving.gateway_logs import (
    FILTER_KINDS,
    KIND_OPERATORS,
    ORDER_KEYS,
    UNCHANGED,
    Direction,
    FilterValue,
    GatewayLog,
    LogFilter,
    LogPage,
    LogQuery,
    Operator,
    Unchanged,
    metadata_text,
)

QueryParams = Sequence[tuple[str, str]]  # a query string's pairs, in order, repeats kept

WIRE_OPERATORS: tuple[Operator, ...] = ("eq", "neq", "contains", "lt", "gt")
DIRECTIONS: tuple[Direction, ...] = ("asc", "desc")
DEFAULT_PER_PAGE, MAX_PER_PAGE = 20, 50
MAX_DELETED = 10_000  # a bulk delete's `limit`, at most and by default

# Never shown, even if a stored head held one.
CREDENTIAL_HEADERS = frozenset(
    {"authorization", "cf-aig-authorization", "x-api-key", "cookie", "set-cookie", "proxy-authorization"}
)

# Cloudflare's deprecated flat list parameters, as the filters they stand for.
FLAT_FILTERS: dict[str, tuple[str, Operator]] = {
    "start_date": ("created_at", "gte"),
    "end_date": ("created_at", "lte"),
    "min_cost": ("cost", "gte"),
    "max_cost": ("cost", "lte"),
    "min_tokens_in": ("tokens_in", "gte"),
    "max_tokens_in": ("tokens_in", "lte"),
    "min_tokens_out": ("tokens_out", "gte"),
    "max_tokens_out": ("tokens_out", "lte"),
    "min_total_tokens": ("tokens", "gte"),
    "max_total_tokens": ("tokens", "lte"),
    "min_duration": ("duration", "gte"),
    "max_duration": ("duration", "lte"),
    "feedback": ("feedback", "eq"),
    "success": ("success", "eq"),
    "cached": ("cached", "eq"),
    "model": ("model", "eq"),
    "model_type": ("model_type", "eq"),
    "provider": ("provider", "eq"),
    "request_content_type": ("request_content_type", "eq"),
    "response_content_type": ("response_content_type", "eq"),
}


def query_parameter(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, **({"description": description} if description else {})}


FILTERS_PARAMETER = query_parameter(
    "filters",
    {"type": "string"},
    "A JSON array of {key, operator, value}; also read as the SDK's repeated filters.key, filters.operator,"
    " filters.value. Keys: " + ", ".join(FILTER_KINDS) + "; operators: " + ", ".join(WIRE_OPERATORS) + ".",
)
ORDER_PARAMETER = query_parameter("order_by", {"type": "string", "enum": list(ORDER_KEYS), "default": "created_at"})
# `openapi_extra` of the list and delete routes (their queries are read here, not by FastAPI).
LIST_PARAMETERS = {
    "parameters": [
        FILTERS_PARAMETER,
        ORDER_PARAMETER,
        query_parameter("order_by_direction", {"type": "string", "enum": list(DIRECTIONS), "default": "desc"}),
        query_parameter("page", {"type": "integer", "minimum": 1, "default": 1}),
        query_parameter(
            "per_page", {"type": "integer", "minimum": 1, "maximum": MAX_PER_PAGE, "default": DEFAULT_PER_PAGE}
        ),
        query_parameter("search", {"type": "string"}, "Free text over the metadata, the model and the path."),
        query_parameter("meta_info", {"type": "boolean"}, "Add the bounds and sums of cost, duration and tokens."),
    ]
}
DELETE_PARAMETERS = {
    "parameters": [
        FILTERS_PARAMETER,
        ORDER_PARAMETER,
        query_parameter("order_by_direction", {"type": "string", "enum": list(DIRECTIONS), "default": "asc"}),
        query_parameter("limit", {"type": "integer", "minimum": 1, "maximum": MAX_DELETED, "default": MAX_DELETED}),
    ]
}
METADATA_VALUE = {"type": ["string", "number", "boolean", "null"]}
PATCH_SCHEMA = {
    "type": "object",
    "properties": {
        "feedback": {"type": ["number", "null"], "minimum": -1, "maximum": 1},
        "score": {"type": ["number", "null"], "minimum": 0, "maximum": 100},
        "metadata": {"type": ["object", "null"], "additionalProperties": METADATA_VALUE},
    },
}


def invalid(message: str, *where: str | int) -> errors.WaiError:
    return errors.gateway_input_invalid(message, ("query", *where))


# --- the list and delete queries --------------------------------------------------------------------


def list_query(params: QueryParams) -> LogQuery:
    """`GET .../logs`: filters, order (newest first by default), page, search, meta_info."""
    last = dict(params)
    if "order_by_direction" not in last and "direction" in last:  # the deprecated name
        last["order_by_direction"] = last["direction"]
    return LogQuery(
        filters=tuple(read_filters(params)),
        order_by=choice(last, "order_by", ORDER_KEYS, "created_at"),
        direction=choice(last, "order_by_direction", DIRECTIONS, "desc"),
        page=count(last, "page", 1, 1, None),
        per_page=count(last, "per_page", DEFAULT_PER_PAGE, 1, MAX_PER_PAGE),
        search=text(last["search"], "search") if last.get("search") else None,
        meta_info=flag(last["meta_info"], "meta_info") if "meta_info" in last else False,
    )


def delete_query(params: QueryParams) -> tuple[LogQuery, int]:
    """`DELETE .../logs`: the filters, the order (oldest first by default) and how many at most."""
    last = dict(params)
    query = LogQuery(
        filters=tuple(read_filters(params)),
        order_by=choice(last, "order_by", ORDER_KEYS, "created_at"),
        direction=choice(last, "order_by_direction", DIRECTIONS, "asc"),
    )
    return query, count(last, "limit", MAX_DELETED, 1, MAX_DELETED)


def choice(last: dict[str, str], name: str, allowed: Sequence[Any], default: Any) -> Any:
    value = last.get(name, default)
    if value not in allowed:
        raise invalid(f"{name} must be one of {', '.join(allowed)}", name)
    return value


def count(last: dict[str, str], name: str, default: int, least: int, most: int | None) -> int:
    text = last.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise invalid(f"{name} must be a whole number", name) from None
    if value < least or (most is not None and value > most):
        raise invalid(f"{name} must be from {least}" + (f" to {most}" if most is not None else " up"), name)
    return value


def flag(text: Any, *where: str | int) -> bool:
    if isinstance(text, bool):
        return text
    if isinstance(text, str) and text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise invalid("must be true or false", *where)


def read_filters(params: QueryParams) -> list[LogFilter]:
    """Every filter the query gives: the JSON ones, the SDK's repeated ones, the flat ones."""
    filters: list[LogFilter] = []
    for text in (value for name, value in params if name == "filters"):
        filters.extend(json_filters(text, len(filters)))
    filters.extend(dotted_filters(params, len(filters)))
    for name, text in params:
        if name in FLAT_FILTERS:
            key, operator = FLAT_FILTERS[name]
            filters.append(LogFilter(key, operator, (value_of(FILTER_KINDS[key], text, operator, name),)))
    return filters


def json_filters(text: str, first: int) -> list[LogFilter]:
    """`filters=[{"key": ..., "operator": ..., "value": ... or [...]}]` (one object alone is read as one)."""
    try:
        given = json.loads(text)
    except ValueError:
        raise invalid("filters must be a JSON array of {key, operator, value}", "filters") from None
    given = [given] if isinstance(given, dict) else given
    if not isinstance(given, list):
        raise invalid("filters must be a JSON array of {key, operator, value}", "filters")
    read = []
    for index, each in enumerate(given, start=first):
        if not isinstance(each, dict) or not {"key", "operator", "value"} <= each.keys():
            raise invalid("each filter is {key, operator, value}", "filters", index)
        values = each["value"] if isinstance(each["value"], list) else [each["value"]]
        read.append(make_filter(each["key"], each["operator"], values, index))
    return read


def dotted_filters(params: QueryParams, first: int) -> list[LogFilter]:
    """The SDK's `filters.key`, `filters.operator`, `filters.value`, paired by their order."""
    keys = [value for name, value in params if name == "filters.key"]
    operators = [value for name, value in params if name == "filters.operator"]
    values = [value for name, value in params if name == "filters.value"]
    if not (keys or operators or values):
        return []
    if len(keys) != len(operators):
        raise invalid("each filter needs one filters.key and one filters.operator", "filters")
    if len(keys) == 1:
        grouped = [values]
    elif len(values) == len(keys):
        grouped = [[value] for value in values]
    else:
        raise invalid(
            "with several filters in filters.key/operator/value, each takes exactly one value;"
            " send filters=<JSON array> for more",
            "filters",
        )
    return [
        make_filter(key, operator, group, index)
        for index, (key, operator, group) in enumerate(zip(keys, operators, grouped, strict=True), start=first)
    ]


def make_filter(key: Any, operator: Any, values: list[Any], index: int) -> LogFilter:
    if key not in FILTER_KINDS:
        raise invalid(f"filters on {key!r} are not supported; keys: {', '.join(FILTER_KINDS)}", "filters", index, "key")
    kind = FILTER_KINDS[key]
    if operator not in WIRE_OPERATORS or operator not in KIND_OPERATORS[kind]:
        allowed = [op for op in KIND_OPERATORS[kind] if op in WIRE_OPERATORS]
        raise invalid(f"{key} takes the operators {', '.join(allowed)}", "filters", index, "operator")
    if not values:
        raise invalid("a filter needs at least one value", "filters", index, "value")
    return LogFilter(
        key, operator, tuple(value_of(kind, value, operator, "filters", index, "value") for value in values)
    )


def value_of(kind: str, value: Any, operator: Operator, *where: str | int) -> FilterValue:
    """One filter value as its key's kind compares it; text from the query string reads as JSON would."""
    if value is None:
        if operator in ("eq", "neq") and kind in ("text", "number"):
            return None
        raise invalid("null is not a value this filter takes", *where)
    if kind == "flag":
        return flag(value, *where)
    if kind == "number":
        return number(value, *where)
    if kind == "time":
        return instant(value, *where)
    if isinstance(value, bool):
        if kind == "metadata":
            return metadata_text(value)
        raise invalid("must be text", *where)
    if isinstance(value, int | float):
        return metadata_text(value)
    if not isinstance(value, str):
        raise invalid("must be text", *where)
    return text(value, *where)


def text(value: str, *where: str | int) -> str:
    if "\x00" in value:  # no database text holds it
        raise invalid("must not hold NUL characters", *where)
    return value


def number(value: Any, *where: str | int) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise invalid("must be a number", *where)
    try:
        read = float(value)
    except (ValueError, OverflowError):
        raise invalid("must be a number", *where) from None
    if not math.isfinite(read):
        raise invalid("must be a finite number", *where)
    return read


def instant(value: Any, *where: str | int) -> float:
    """An ISO-8601 date-time (UTC when it names no offset), as wall-clock seconds."""
    try:
        read = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        read = None
    if read is None:
        raise invalid("must be an ISO-8601 date-time", *where)
    return (read if read.tzinfo else read.replace(tzinfo=UTC)).timestamp()


# --- a log, on the wire -----------------------------------------------------------------------------


def iso_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def list_item(log: GatewayLog) -> dict[str, Any]:
    """A log as `GET .../logs` lists it. `ttft`, `tokens_cached`, `feedback`, `score` and `event_id` are wai's."""
    return {
        "id": log.id,
        "created_at": iso_time(log.created_at),
        "provider": log.provider,
        "model": log.model,
        "model_type": log.model_type,
        "path": log.path,
        "request_type": log.request_type,
        "request_content_type": log.request_content_type,
        "response_content_type": log.response_content_type,
        "status_code": log.status_code,
        "step": log.step,
        "success": log.success,
        "cached": log.cached,
        "duration": log.duration_ms,
        "ttft": log.ttft_ms,
        "tokens_in": log.tokens_in,
        "tokens_out": log.tokens_out,
        "tokens_cached": log.tokens_cached,
        "cost": log.cost,
        "custom_cost": log.custom_cost,
        "metadata": json.dumps(log.all_metadata),
        "event_id": log.event_id,
        "feedback": log.feedback,
        "score": log.score,
    }


def detail(log: GatewayLog) -> dict[str, Any]:
    """A log as `GET .../logs/{id}` shows it: the list's fields, its heads and sizes."""
    return {
        **list_item(log),
        "request_head": without_credentials(log.request_head),
        "request_head_complete": True,
        "request_size": log.request_size,
        "response_head": without_credentials(log.response_head),
        "response_head_complete": True,
        "response_size": log.response_size,
    }


def binding_log(log: GatewayLog) -> dict[str, Any]:
    """A log as the binding's `getLog` reads it: its `AiGatewayLog` type has `metadata` as an object."""
    return {**detail(log), "metadata": log.all_metadata}


def without_credentials(head: str) -> str:
    """A stored head (JSON text of its headers: an object, or [name, value] pairs; else `name: value`
    lines) less any credential header."""
    try:
        headers = json.loads(head)
    except ValueError:
        lines = head.splitlines()
        return "\n".join(line for line in lines if line.partition(":")[0].strip().lower() not in CREDENTIAL_HEADERS)
    if isinstance(headers, dict):
        return json.dumps({name: value for name, value in headers.items() if name.lower() not in CREDENTIAL_HEADERS})
    if isinstance(headers, list):
        return json.dumps([pair for pair in headers if not is_credential_pair(pair)])
    return head


def is_credential_pair(pair: Any) -> bool:
    return isinstance(pair, list) and bool(pair) and str(pair[0]).lower() in CREDENTIAL_HEADERS


def result_info(page: LogPage, query: LogQuery) -> dict[str, Any]:
    """`page, per_page, count, total_count`; with `meta_info`, the bounds and wai's sums (`total_*`)."""
    info: dict[str, Any] = {
        "page": query.page,
        "per_page": query.per_page,
        "count": len(page.items),
        "total_count": page.total_count,
    }
    if page.totals is not None:
        info.update(asdict(page.totals))
    return info


# --- PATCH -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogPatch:
    """What a PATCH sets; a field it leaves out is UNCHANGED, null clears it."""

    feedback: float | None | Unchanged = UNCHANGED
    score: float | None | Unchanged = UNCHANGED
    metadata: dict[str, Any] | None | Unchanged = UNCHANGED


def log_patch(body: Any) -> LogPatch:
    """`{feedback: -1..1 | null, score: 0..100 | null, metadata: {name: string | number | bool} | null}`;
    numbers may come as text (the binding types `feedback` as "-1" | "1" too); a null entry is none."""
    if not isinstance(body, dict):
        raise errors.gateway_input_invalid("the body must be a JSON object", ("body",))
    return LogPatch(
        feedback=bounded(body, "feedback", -1, 1),
        score=bounded(body, "score", 0, 100),
        metadata=patched_metadata(body),
    )


def bounded(body: dict[str, Any], name: str, least: float, most: float) -> float | None | Unchanged:
    if name not in body:
        return UNCHANGED
    if body[name] is None:
        return None
    try:
        value = number(body[name], name)
    except errors.WaiError:
        value = math.nan
    if not least <= value <= most:
        raise errors.gateway_input_invalid(f"{name} must be a number from {least} to {most}, or null", ("body", name))
    return value


def patched_metadata(body: dict[str, Any]) -> dict[str, Any] | None | Unchanged:
    if "metadata" not in body:
        return UNCHANGED
    given = body["metadata"]
    if given is None:
        return None
    if not isinstance(given, dict):
        raise errors.gateway_input_invalid("metadata must be an object, or null", ("body", "metadata"))
    for name, value in given.items():
        if "\x00" in name or (isinstance(value, str) and "\x00" in value):
            raise errors.gateway_input_invalid("metadata must not hold NUL characters", ("body", "metadata", name))
        if value is not None and not isinstance(value, str | int | float | bool):
            raise errors.gateway_input_invalid(
                "a metadata value is a string, a number or a boolean", ("body", "metadata", name)
            )
    return {name: value for name, value in given.items() if value is not None}
