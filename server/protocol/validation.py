"""A small JSON Schema validator that words its errors as the Workers AI validator does.

Supports the subset the Workers AI input schemas use: type, enum, minLength, minimum, maximum,
required, properties, items, minItems, maxItems, oneOf. Paths are JSON pointers with the root written '/'.
Examples of the messages (docs/compatibility.md, section 6):
  oneOf at '/' not met, 0 matches: required properties at '/' are 'prompt', ...
  Type mismatch of '/messages/0/content', 'array' not in 'string'
  '/temperature' must be <= 5
  Length of '/prompt' must be >= 1 not met
  enum foo not in json_object,json_schema at '/response_format/type'
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]


def validate(instance: Any, schema: Schema) -> list[str]:
    """Return the validator's error messages for `instance`; an empty list means valid."""
    return _errors(instance, schema, "")


def _pointer(path: str) -> str:
    return path or "/"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _has_type(value: Any, expected: str) -> bool:
    if expected == "integer":
        # An int of any size, or a float with nothing after the point (JSON's 5.0).
        return _json_type(value) == "number" and (isinstance(value, int) or float(value).is_integer())
    return _json_type(value) == expected


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _errors(value: Any, schema: Schema, path: str) -> list[str]:
    where = _pointer(path)
    if "type" in schema:
        expected = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_has_type(value, t) for t in expected):
            return [f"Type mismatch of '{where}', '{_json_type(value)}' not in '{','.join(expected)}'"]

    errors: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"enum {value} not in {','.join(str(v) for v in schema['enum'])} at '{where}'")
    if isinstance(value, str) and "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(f"Length of '{where}' must be >= {schema['minLength']} not met")
    if isinstance(value, str) and "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(f"Length of '{where}' must be <= {schema['maxLength']} not met")
    if _json_type(value) == "number":
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"'{where}' must be >= {_number(schema['minimum'])}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"'{where}' must be <= {_number(schema['maximum'])}")
    if isinstance(value, dict):
        errors += _object_errors(value, schema, path)
    if isinstance(value, list) and "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(f"Length of '{where}' must be >= {schema['minItems']} not met")
    if isinstance(value, list) and "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(f"Length of '{where}' must be <= {schema['maxItems']} not met")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            errors += _errors(item, schema["items"], f"{path}/{index}")
    if "oneOf" in schema:
        errors += _one_of_errors(value, schema["oneOf"], where, path)
    return errors


def _object_errors(value: dict, schema: Schema, path: str) -> list[str]:
    errors: list[str] = []
    missing = [name for name in schema.get("required", []) if name not in value]
    if missing:
        names = ", ".join(f"'{name}'" for name in missing)
        errors.append(f"required properties at '{_pointer(path)}' are {names}")
    for name, sub_schema in schema.get("properties", {}).items():
        if name in value:
            errors += _errors(value[name], sub_schema, f"{path}/{name}")
    return errors


def _one_of_errors(value: Any, branches: list[Schema], where: str, path: str) -> list[str]:
    branch_errors = [_errors(value, branch, path) for branch in branches]
    matches = sum(1 for errors in branch_errors if not errors)
    if matches == 1:
        return []
    message = f"oneOf at '{where}' not met, {matches} matches"
    if matches == 0:
        # A field shared by both branches fails in both; say it once.
        unique = dict.fromkeys(error for errors in branch_errors for error in errors)
        message += ": " + ", ".join(unique)
    return [message]
