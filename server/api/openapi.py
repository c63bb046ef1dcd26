"""The OpenAPI document at `/openapi.json`: valid, so that schema tools load it, with every request body.

The API routes read their bodies as raw JSON themselves (api/common.py: the size limit, NaN and lone
surrogates refused, the protocol's own error words), so FastAPI cannot see what they expect. Each route
declares its body with `openapi_extra` from the helpers below, given the very schema that validates it:
the Workers AI input schemas (protocol/workers_ai.py), the OpenAI and Anthropic pydantic request
models (protocol/openai.py, protocol/anthropic.py), the fine-tune create schema and the multipart
asset upload (api/finetunes.py).

`install(app)` completes the document FastAPI builds:
- every `{name}` of a path template is declared as a path parameter on each of its operations (the
  routers' prefixes carry `{account_id}`, which most route functions do not take);
- the schemas the bodies name go under `components/schemas`;
- the API operations document their errors in their protocol's envelope (api/errors.py renders every
  error so), instead of FastAPI's 422, which wai never sends;
- `/metrics` answers Prometheus text, not JSON.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from server.api.errors import is_anthropic_path, is_openai_path

Schema = dict[str, Any]

COMPONENTS = "#/components/schemas/"

# Schemas that request bodies name, by component name: filled as the route modules are imported.
_BODY_SCHEMAS: dict[str, Schema] = {}
_BODY_MODELS: dict[str, type[BaseModel]] = {}

WORKERS_AI_ERROR: Schema = {
    "title": "WorkersAiError",
    "description": "Every Workers AI error: the envelope with success false and one error.",
    "type": "object",
    "properties": {
        "result": {"type": "object", "maxProperties": 0},
        "success": {"const": False},
        "errors": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "code": {"type": "integer"},
                    "message": {"type": "string"},
                    "path": {
                        "type": "array",
                        "items": {"type": ["string", "integer"]},
                        "description": "The gateways API's validation errors: where the field that failed was sent.",
                    },
                },
                "required": ["code", "message"],
                "additionalProperties": False,
            },
        },
        "messages": {
            "type": "array",
            "description": "Empty, but for a gateways API validation error: what is wrong with the field.",
            "items": {
                "type": "object",
                "properties": {"code": {"type": "integer"}, "message": {"type": "string"}},
                "required": ["code", "message"],
            },
        },
    },
    "required": ["result", "success", "errors", "messages"],
    "additionalProperties": False,
}

OPENAI_ERROR: Schema = {
    "title": "OpenAiError",
    "description": "Every OpenAI error: `code` is OpenAI's own code where its API has one for the error "
    "(context_length_exceeded, model_not_found, ...), else the Workers AI error code, as a string.",
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": "string"},
            },
            "required": ["message", "type", "param", "code"],
            "additionalProperties": False,
        }
    },
    "required": ["error"],
    "additionalProperties": False,
}

ANTHROPIC_ERROR: Schema = {
    "title": "AnthropicError",
    "description": "Every Anthropic Messages error: its type told by the HTTP status.",
    "type": "object",
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
            "required": ["type", "message"],
            "additionalProperties": False,
        },
    },
    "required": ["type", "error"],
    "additionalProperties": False,
}

_ERROR_SCHEMAS = {"WorkersAiError": WORKERS_AI_ERROR, "OpenAiError": OPENAI_ERROR, "AnthropicError": ANTHROPIC_ERROR}

PATH_PARAMETER_DESCRIPTIONS = {
    "account_id": "Your Cloudflare account id: accepted and ignored.",
    "model": "A served model's name, slashes included: e.g. @cf/meta/llama-3-8b-instruct.",
    "id_or_name": "A fine-tune's id or name.",
}

_STREAM = {"text/event-stream": {"schema": {"type": "string", "description": "Server-sent events, with stream true."}}}


def ref(name: str) -> Schema:
    return {"$ref": COMPONENTS + name}


def schema_body(name: str, schema: Schema, description: str, streams: bool = False) -> dict[str, Any]:
    """`openapi_extra` for a route whose JSON body `schema` validates, kept as component `name`."""
    _register_schema(name, schema)
    return json_body(ref(name), description, streams)


def model_body(model: type[BaseModel], description: str, streams: bool = False) -> dict[str, Any]:
    """`openapi_extra` for a route whose JSON body the pydantic `model` validates."""
    known = _BODY_MODELS.setdefault(model.__name__, model)
    if known is not model:
        raise ValueError(f"two request models are named {model.__name__}")
    return json_body(ref(model.__name__), description, streams)


def one_of_bodies(bodies: dict[str, Schema], description: str, streams: bool = False) -> dict[str, Any]:
    """`openapi_extra` for a route that takes any one of several bodies (the run route: text or embeddings)."""
    for name, schema in bodies.items():
        _register_schema(name, schema)
    return json_body({"oneOf": [ref(name) for name in bodies]}, description, streams)


def json_body(schema: Schema, description: str, streams: bool = False) -> dict[str, Any]:
    extra: dict[str, Any] = {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": copy.deepcopy(schema)}},
        }
    }
    if streams:
        extra["responses"] = {"200": {"content": copy.deepcopy(_STREAM)}}
    return extra


def form_body(name: str, fields: dict[str, Schema], required: list[str], description: str) -> dict[str, Any]:
    """`openapi_extra` for a multipart/form-data body with these fields (a file: `format: binary`)."""
    _register_schema(name, {"type": "object", "properties": fields, "required": required})
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"multipart/form-data": {"schema": ref(name)}},
        }
    }


def _register_schema(name: str, schema: Schema) -> None:
    known = _BODY_SCHEMAS.setdefault(name, copy.deepcopy(schema))
    if known != schema:
        raise ValueError(f"two different request body schemas are named {name}")


def install(app: FastAPI) -> None:
    """Serve the completed document at /openapi.json (built once, on first use)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """The document FastAPI built, completed as the module docstring says."""
    document = copy.deepcopy(document)
    components = document.setdefault("components", {}).setdefault("schemas", {})
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            _declare_path_parameters(path, operation)
            _document_errors(path, operation)
    if "/metrics" in document.get("paths", {}):
        document["paths"]["/metrics"]["get"]["responses"]["200"]["content"] = {
            "text/plain": {"schema": {"type": "string", "description": "Prometheus text exposition format."}}
        }
    _add(components, copy.deepcopy(_BODY_SCHEMAS))
    _add(components, copy.deepcopy(_ERROR_SCHEMAS))
    if _BODY_MODELS:
        _, definitions = models_json_schema(
            [(model, "validation") for model in _BODY_MODELS.values()], ref_template=COMPONENTS + "{model}"
        )
        _add(components, definitions.get("$defs", {}))
    _drop_unused(document, components)
    return document


def _declare_path_parameters(path: str, operation: dict[str, Any]) -> None:
    parameters = operation.setdefault("parameters", [])
    declared = {parameter["name"] for parameter in parameters if parameter.get("in") == "path"}
    for name in re.findall(r"{([^}]+)}", path):
        if name not in declared:
            parameters.append({"name": name, "in": "path", "required": True, "schema": {"type": "string"}})
    for parameter in parameters:
        if parameter.get("in") == "path" and parameter["name"] in PATH_PARAMETER_DESCRIPTIONS:
            parameter.setdefault("description", PATH_PARAMETER_DESCRIPTIONS[parameter["name"]])


def _document_errors(path: str, operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    responses.pop("422", None)  # FastAPI's; wai answers a refused parameter with 400 in the envelope
    if not path.startswith(("/client/v4/", "/v1/")):
        return
    if is_anthropic_path(path):
        name, words = "AnthropicError", "Anthropic's error object"
    elif is_openai_path(path):
        name, words = "OpenAiError", "OpenAI's error object"
    else:
        name, words = "WorkersAiError", "Workers AI's envelope"
    content = {"application/json": {"schema": ref(name)}}
    responses["4XX"] = {"description": f"Refused: the error in {words}.", "content": content}
    responses["5XX"] = {
        "description": f"Not served (starting, draining, overloaded or failed): the error in {words}.",
        "content": copy.deepcopy(content),
    }


def _add(components: dict[str, Any], schemas: dict[str, Any]) -> None:
    for name, schema in schemas.items():
        if components.get(name, schema) != schema:
            raise ValueError(f"two different schemas would be components/schemas/{name}")
        components[name] = schema


def _drop_unused(document: dict[str, Any], components: dict[str, Any]) -> None:
    """Keep only the schemas the operations reach (FastAPI's validation-error ones no longer are)."""
    reached: set[str] = set()
    pending = _refs(document.get("paths", {}))
    while pending:
        name = pending.pop()
        if name not in reached and name in components:
            reached.add(name)
            pending |= _refs(components[name])
    for name in set(components) - reached:
        del components[name]


def _refs(value: Any) -> set[str]:
    """The component names that `$ref`s anywhere in `value` point to."""
    if isinstance(value, dict):
        found = {value["$ref"].removeprefix(COMPONENTS)} if isinstance(value.get("$ref"), str) else set()
        for item in value.values():
            found |= _refs(item)
        return found
    if isinstance(value, list):
        return set().union(*(_refs(item) for item in value)) if value else set()
    return set()
