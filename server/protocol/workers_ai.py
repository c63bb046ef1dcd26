"""The Workers AI wire format: input schemas, parsing, envelopes, catalog entries.

The input schemas below are what the validator enforces and what the catalog publishes.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from server import errors
from server.config import ModelConfig
from server.protocol.sampling import SAMPLING_FIELDS, integer_fields
from server.protocol.tools import TOOL_SCHEMA, past_calls, tool_use, workers_ai_calls
from server.protocol.validation import validate
from server.serving.requests import EmbeddingRequest, Message, OutputFormat, RunOptions, TextRequest
from server.serving.text import Completion

_STRING = {"type": "string"}
_BOOLEAN = {"type": "boolean"}

_RESPONSE_FORMAT = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "enum": ["json_object", "json_schema"]},
        "json_schema": {"type": "object"},
    },
}

_COMMON = {
    "lora": {"type": "string", "description": "Name or id of the LoRA fine-tune to apply."},
    "response_format": _RESPONSE_FORMAT,
    "raw": {"type": "boolean", "default": False, "description": "If true, no chat template is applied."},
    "stream": {"type": "boolean", "default": False, "description": "Stream the answer as server-sent events."},
    "tools": {"type": "array", "items": TOOL_SCHEMA, "description": "Tools the model may call (either form)."},
    "tool_choice": {
        "type": ["string", "object"],
        "description": 'auto, none, required, or {"type": "function", "function": {"name": ...}}.',
    },
    **SAMPLING_FIELDS,
}

PROMPT_FORM = {
    "title": "Prompt",
    "type": "object",
    "properties": {"prompt": {"type": "string", "minLength": 1}, **_COMMON},
    "required": ["prompt"],
}

MESSAGES_FORM = {
    "title": "Messages",
    "type": "object",
    "properties": {
        "messages": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "role": _STRING,
                    "content": _STRING,
                    "tool_calls": {"type": "array", "description": "An assistant turn's calls."},
                    "tool_call_id": _STRING,
                },
                "required": ["role", "content"],
            },
        },
        "functions": {
            "type": "array",
            "items": {"type": "object", "properties": {"name": _STRING, "code": _STRING}, "required": ["name", "code"]},
        },
        **_COMMON,
    },
    "required": ["messages"],
}

TEXT_GENERATION_INPUT = {"type": "object", "oneOf": [PROMPT_FORM, MESSAGES_FORM]}

_USAGE = {
    "type": "object",
    "properties": {
        "prompt_tokens": {"type": "number"},
        "completion_tokens": {"type": "number"},
        "total_tokens": {"type": "number"},
        "prompt_tokens_details": {
            "type": "object",
            "properties": {
                "cached_tokens": {"type": "number", "description": "Prompt tokens served from the prefix cache."}
            },
        },
    },
}

TEXT_GENERATION_OUTPUT = {
    "oneOf": [
        {
            "type": "object",
            "properties": {
                "response": {
                    "type": ["string", "object"],
                    "description": "The generated text (an object in JSON mode).",
                },
                "tool_calls": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"name": _STRING, "arguments": {"type": "object"}}},
                },
                "usage": _USAGE,
            },
        },
        {"type": "string", "format": "binary", "description": "The event stream, when stream is true."},
    ]
}


MAX_TEXTS_PER_REQUEST = 100
_TEXT_TO_EMBED = {"type": "string", "minLength": 1, "description": "The text to embed."}
_POOLING = {
    "type": "string",
    "enum": ["mean", "cls"],
    "default": "mean",
    "description": "How token vectors become one vector per text: mean, or the first token's (cls).",
}

TEXT_EMBEDDINGS_INPUT = {
    "type": "object",
    "properties": {
        "text": {
            "oneOf": [
                _TEXT_TO_EMBED,
                {
                    "type": "array",
                    "items": _TEXT_TO_EMBED,
                    "minItems": 1,
                    "maxItems": MAX_TEXTS_PER_REQUEST,
                    "description": "A batch of texts to embed.",
                },
            ]
        },
        "pooling": _POOLING,
    },
    "required": ["text"],
}

TEXT_EMBEDDINGS_OUTPUT = {
    "type": "object",
    "properties": {
        "shape": {"type": "array", "items": {"type": "number"}, "description": "[texts, dimensions]"},
        "data": {
            "type": "array",
            "items": {"type": "array", "items": {"type": "number"}},
            "description": "One vector per text, in input order.",
        },
        "pooling": {"type": "string", "enum": ["mean", "cls"]},
    },
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "text-generation": {"input": TEXT_GENERATION_INPUT, "output": TEXT_GENERATION_OUTPUT},
    "text-embeddings": {"input": TEXT_EMBEDDINGS_INPUT, "output": TEXT_EMBEDDINGS_OUTPUT},
}


def published_schema(model: ModelConfig) -> dict[str, Any]:
    """The input and output schemas as `/ai/models/schema` returns them, with this model's defaults."""
    schema = copy.deepcopy(SCHEMAS[model.task])
    if model.task == "text-generation":
        for form in schema["input"]["oneOf"]:
            form["properties"]["max_tokens"]["default"] = model.default_max_tokens
            form["properties"]["temperature"]["default"] = model.default_temperature
    return schema


def parse_embeddings_input(body: Any) -> EmbeddingRequest:
    """Validate an embeddings run body (`{"text": ...}`); raise 5006 with the validator's words."""
    problems = validate(body, TEXT_EMBEDDINGS_INPUT)
    if problems:
        raise errors.bad_input(", ".join(problems))
    text = body["text"]
    return EmbeddingRequest(
        texts=(text,) if isinstance(text, str) else tuple(text), pooling=body.get("pooling", "mean")
    )


def embeddings_result(vectors: list[list[float]], pooling: str) -> dict[str, Any]:
    return {"shape": [len(vectors), len(vectors[0]) if vectors else 0], "data": vectors, "pooling": pooling}


_INTEGERS = integer_fields(SAMPLING_FIELDS)


def parse_run_input(body: Any, query: Mapping[str, str] | None = None) -> TextRequest:
    """Validate a run body against the schema; raise 5006 with the validator's words. Run options
    come in the body's `options` object or as query parameters (`?rejectIfBusy=true`)."""
    problems = validate(body, TEXT_GENERATION_INPUT)
    if problems:
        raise errors.bad_input(", ".join(problems))
    # JSON allows 5.0 for an integer; the engine wants 5.
    sampling = {name: int(body[name]) if name in _INTEGERS else body[name] for name in SAMPLING_FIELDS if name in body}
    output = _output_format(body.get("response_format"))
    raw = body.get("raw", False)
    return TextRequest(
        prompt=body.get("prompt"),
        messages=_messages(body.get("messages")),
        raw=raw,
        # tool_choice is OpenAI's, outside the hosted schema; LangChain's Cloudflare model sends it here.
        tools=tool_use(body.get("tools"), body.get("tool_choice"), output, raw),
        sampling=sampling,
        output=output,
        lora=body.get("lora"),
        stream=body.get("stream", False),
        options=run_options(body.get("options"), query or {}),
    )


def _messages(messages: list[dict[str, Any]] | None) -> tuple[Message, ...] | None:
    if messages is None:
        return None
    return tuple(
        Message(
            role=message["role"],
            content=message["content"],
            tool_calls=past_calls(message.get("tool_calls"), f"messages.{index}.tool_calls"),
            tool_call_id=message.get("tool_call_id"),
        )
        for index, message in enumerate(messages)
    )


def run_options(options: Any, query: Mapping[str, str]) -> RunOptions:
    given = options if isinstance(options, dict) else {}
    return RunOptions(reject_if_busy=_flag(given.get("rejectIfBusy", query.get("rejectIfBusy"))))


def _flag(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _output_format(response_format: dict[str, Any] | None) -> OutputFormat:
    if not response_format or "type" not in response_format:
        return OutputFormat()
    return OutputFormat(type=response_format["type"], schema=response_format.get("json_schema"))


def text_result(completion: Completion, json_mode: bool) -> dict[str, Any]:
    """A run endpoint's text result: the first choice, parsed in JSON mode, with its usage. When the
    model called a tool, `response` is empty and `tool_calls` holds the call."""
    choice = completion.choices[0]
    text = choice.text
    return {
        "response": json_response(text) if json_mode else text,
        "tool_calls": workers_ai_calls(choice.tool_calls),
        "usage": run_usage(completion.prompt_tokens, completion.completion_tokens, completion.cached_tokens),
    }


def json_response(text: str) -> Any:
    """In JSON mode `response` is the parsed object, not a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise errors.json_mode_failed() from exc


def success(result: Any) -> dict[str, Any]:
    return {"result": result, "success": True, "errors": [], "messages": []}


MODEL_AND_INPUT = {
    "title": "RunRequest",
    "type": "object",
    "properties": {
        "model": {"type": "string", "minLength": 1, "description": "The model's name, as in /ai/run/{model}."},
        "input": {"type": "object", "description": "The model's input, as the run endpoint's body."},
    },
    "required": ["model", "input"],
}


def model_and_input(body: Any) -> tuple[str, dict[str, Any]]:
    """The newer REST form's body, `{"model": ..., "input": {...}}`: the model and its run body."""
    problems = validate(body, MODEL_AND_INPUT)
    if problems:
        raise errors.bad_input(", ".join(problems))
    return body["model"], body["input"]


def failure(error: errors.WaiError) -> dict[str, Any]:
    entry: dict[str, Any] = {"code": error.code, "message": error.message}
    messages = []
    if error.where is not None:
        # The gateways API's validation errors: Cloudflare's fixed message with the field's path, and
        # what is wrong with the field (the message the /v1 routes answer) as a note beside it.
        entry["path"] = list(error.where)
        messages.append({"code": error.code, "message": error.openai_message or error.message})
    return {"result": {}, "success": False, "errors": [entry], "messages": messages}


def run_usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict[str, Any]:
    """Workers AI's `usage`: the three counts and, in `prompt_tokens_details` as the hosted service
    sends it, the prompt tokens vLLM's prefix cache served."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }
