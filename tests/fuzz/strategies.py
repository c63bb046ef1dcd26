"""Hypothesis strategies: any JSON value the body reader can yield, values valid for a schema (the subset
of JSON Schema server/protocol/validation.py implements), and bytes that are JSON only by accident."""

from __future__ import annotations

import json
import math
import os
from typing import Any

from hypothesis import strategies as st

# Examples per hypothesis property: a few dozen in the fast tier; `make fuzz` sets more.
EXAMPLES = int(os.environ.get("WAI_FUZZ_PROPERTY_EXAMPLES", "40"))

# Python's json reads integers of up to 4300 digits: far beyond a float's range (about 1.8e308).
integers = st.one_of(
    st.integers(),
    st.sampled_from([2**53 + 1, 2**63, 2**64 + 1, 10**309, -(10**309), 10**4000]),
    st.integers(min_value=-(10**400), max_value=10**400),
)
# What the reader yields for numbers: NaN and Infinity are refused (server/api/common.py).
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.none() | st.booleans() | integers | finite_floats | st.text(max_size=20)


def json_values(keys: list[str] | None = None) -> st.SearchStrategy[Any]:
    """Any JSON value; object keys drawn mostly from `keys`, so that values land in the schema's fields."""
    key = st.sampled_from(keys) | st.text(max_size=8) if keys else st.text(max_size=8)
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(key, children, max_size=6),
        max_leaves=20,
    )


def property_names(schema: Any) -> list[str]:
    """Every property name anywhere in `schema`, to aim generated objects at its fields."""
    names: set[str] = set()
    if isinstance(schema, dict):
        names.update(schema.get("properties", {}))
        for value in schema.values():
            names.update(property_names(value))
    elif isinstance(schema, list):
        for item in schema:
            names.update(property_names(item))
    return sorted(names)


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values meant to satisfy `schema` (type, enum, minLength, maxLength, minimum, maximum, required,
    properties, items, minItems, maxItems, oneOf). Optional properties are drawn or left out; oneOf
    branches may overlap, so callers keep only what a reference validator accepts."""
    if "oneOf" in schema:
        rest = {key: value for key, value in schema.items() if key != "oneOf"}
        return st.one_of([from_schema({**rest, **branch}) for branch in schema["oneOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**schema, "type": one}) for one in kind])
    if kind == "string":
        return st.text(min_size=schema.get("minLength", 0), max_size=schema.get("maxLength", 30))
    if kind == "integer":
        return st.integers(min_value=_bound(schema, "minimum"), max_value=_bound(schema, "maximum"))
    if kind == "number":
        return st.floats(
            min_value=schema.get("minimum"), max_value=schema.get("maximum"), allow_nan=False, allow_infinity=False
        ) | st.integers(min_value=_bound(schema, "minimum"), max_value=_bound(schema, "maximum"))
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        items = from_schema(schema["items"]) if "items" in schema else json_values()
        return st.lists(items, min_size=schema.get("minItems", 0), max_size=schema.get("maxItems", 3))
    if kind == "object":
        properties = schema.get("properties", {})
        required = {name: from_schema(properties.get(name, {})) for name in schema.get("required", [])}
        optional = {name: from_schema(sub) for name, sub in properties.items() if name not in required}
        return st.fixed_dictionaries(required, optional=optional)
    return json_values()


def top_level_names(schema: dict[str, Any]) -> list[str]:
    """The properties of `schema`'s objects themselves (its oneOf branches' included), not nested ones."""
    names = set(schema.get("properties", {}))
    for branch in schema.get("oneOf", []):
        names.update(top_level_names(branch))
    return sorted(names)


def one_field_off(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A value from the schema with one of its top-level fields set to any JSON value, a scalar most often."""

    def replace(instance: Any, name: str, value: Any) -> Any:
        return {**instance, name: value} if isinstance(instance, dict) else instance

    names = top_level_names(schema)
    return st.builds(replace, from_schema(schema), st.sampled_from(names), scalars | json_values(names))


def _bound(schema: dict[str, Any], name: str) -> int | None:
    """The schema's bound as an integer bound: rounded inwards."""
    value = schema.get(name)
    if value is None:
        return None
    return math.ceil(value) if name == "minimum" else math.floor(value)


def _mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    """Apply (position, how many bytes to drop, what to insert) edits to `data`."""
    for position, drop, insert in edits:
        at = position % (len(data) + 1)
        data = data[:at] + insert + data[at + drop :]
    return data


NASTY_BYTES = [b"\xff", b"\xc3", b"\x00", b"\\ud800", b'"', b"{", b"[", b"]", b"}", b",", b":", b"NaN", b"1e999"]

edits = st.lists(
    st.tuples(st.integers(0, 10_000), st.integers(0, 3), st.sampled_from(NASTY_BYTES) | st.binary(max_size=3)),
    max_size=4,
)


def bodies(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """Request bodies: arbitrary bytes, any JSON, and near-valid JSON broken at the byte level."""
    return st.one_of(
        st.binary(max_size=200),
        json_values().map(lambda value: json.dumps(value).encode()),
        st.tuples(valid.map(lambda value: json.dumps(value, ensure_ascii=False).encode()), edits).map(
            lambda pair: _mutate(*pair)
        ),
    )
