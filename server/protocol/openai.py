"""The OpenAI wire format: chat completions, embeddings and the model list.

Requests are validated by the pydantic models below, whose bounds come from
protocol/sampling.py (OPENAI_SAMPLING_FIELDS), and become the same TextRequest / EmbeddingRequest
the Workers AI endpoint builds. Pydantic's errors become one clear message with `param` set.
"""

from __future__ import annotations

import base64
import struct
import time
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from server import errors
from server.protocol.catalog import Entry
from server.protocol.sampling import OPENAI_SAMPLING_FIELDS
from server.protocol.workers_ai import MAX_TEXTS_PER_REQUEST
from server.serving.requests import EmbeddingRequest, OutputFormat, SamplingOptions, TextRequest


def _bounded(name: str, kind: type) -> Any:
    """An optional field with the range protocol/sampling.py gives it."""
    spec = OPENAI_SAMPLING_FIELDS[name]
    return Annotated[kind | None, Field(ge=spec.get("minimum"), le=spec.get("maximum"),
                                        description=spec["description"])]


class _Request(BaseModel):
    # Strict: "0.5" is not a number and true is not 1. Unknown fields are ignored, as OpenAI does.
    model_config = ConfigDict(strict=True, extra="ignore")


class Message(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    # A string, an array of text parts, or null (an assistant turn that only called tools).
    content: Any = Field(None, validate_default=True)
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[dict[str, Any]] | None = None

    @field_validator("content")
    @classmethod
    def _text_content(cls, content: Any) -> str:
        if content is None:
            return ""
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "\n".join(_text_part(part) for part in content)
        raise ValueError("must be a string, an array of content parts, or null")


def _text_part(part: Any) -> str:
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise ValueError("each content part must be an object with a type")
    if part["type"] != "text":
        raise ValueError(f"content parts of type {part['type']!r} are not supported; this model reads text")
    if not isinstance(part.get("text"), str):
        raise ValueError("a text content part needs a string 'text'")
    return part["text"]


class JsonSchemaFormat(_Request):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Request):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format of type json_schema needs a json_schema object")
        return self


class StreamOptions(_Request):
    include_usage: bool = False


class ChatCompletionRequest(_Request):
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: _bounded("max_tokens", int) = None
    max_completion_tokens: _bounded("max_tokens", int) = None
    temperature: _bounded("temperature", float) = None
    top_p: _bounded("top_p", float) = None
    top_k: _bounded("top_k", int) = None
    seed: _bounded("seed", int) = None
    repetition_penalty: _bounded("repetition_penalty", float) = None
    frequency_penalty: _bounded("frequency_penalty", float) = None
    presence_penalty: _bounded("presence_penalty", float) = None
    n: _bounded("n", int) = None
    stop: Any = Field(None, validate_default=True)
    logprobs: bool = False
    top_logprobs: _bounded("top_logprobs", int) = None
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, stop: Any) -> tuple[str, ...]:
        if stop is None:
            return ()
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > 4:
            raise ValueError("must be a non-empty string or an array of up to 4 of them")
        return tuple(stops)

    @field_validator("top_logprobs")
    @classmethod
    def _only_with_logprobs(cls, top_logprobs: int | None, info: ValidationInfo) -> int | None:
        if top_logprobs is not None and not info.data.get("logprobs"):
            raise ValueError("allowed only when logprobs is true")
        return top_logprobs

    @field_validator("stream_options")
    @classmethod
    def _only_when_streaming(cls, options: StreamOptions | None,
                             info: ValidationInfo) -> StreamOptions | None:
        if options is not None and not info.data.get("stream"):
            raise ValueError("allowed only when stream is true")
        return options


class EmbeddingsRequest(_Request):
    model: str
    input: str | list[str] = Field(union_mode="left_to_right")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, description="must equal the model's own: none here shortens")
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _some_text(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if not texts or len(texts) > MAX_TEXTS_PER_REQUEST:
            raise ValueError(f"must hold between 1 and {MAX_TEXTS_PER_REQUEST} strings")
        if any(not text for text in texts):
            raise ValueError("must not contain empty strings")
        return value


def parse(model: type[_Request], body: Any) -> Any:
    """Validate `body` as `model`; a failure is a 400 naming the parameter, in the user's words."""
    if not isinstance(body, dict):
        raise errors.bad_input("the body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        param = ".".join(str(part) for part in first["loc"] if not _is_type_tag(part)) or None
        message = first["msg"].removeprefix("Value error, ")
        raise errors.bad_input(f"{param}: {message}" if param else message, param=param) from exc


def _is_type_tag(part: Any) -> bool:
    # pydantic adds a union member's type to an error's location (e.g. "list[str]"); users never wrote it.
    return isinstance(part, str) and ("[" in part or part in {"str", "int", "float", "bool"})


def text_request(chat: ChatCompletionRequest) -> TextRequest:
    """The same neutral request the Workers AI endpoint builds."""
    sampling = SamplingOptions(
        max_tokens=chat.max_completion_tokens if chat.max_completion_tokens is not None else chat.max_tokens,
        temperature=chat.temperature,
        top_p=chat.top_p,
        top_k=chat.top_k,
        seed=chat.seed,
        repetition_penalty=chat.repetition_penalty,
        frequency_penalty=chat.frequency_penalty,
        presence_penalty=chat.presence_penalty,
        stop=chat.stop,
        n=chat.n or 1,
        logprobs=(chat.top_logprobs or 0) if chat.logprobs else None,
    )
    return TextRequest(
        messages=[message.model_dump(exclude_none=True) for message in chat.messages],
        tools=chat.tools,
        sampling=sampling,
        output=_output_format(chat.response_format),
        stream=chat.stream,
    )


def _output_format(response_format: ResponseFormat | None) -> OutputFormat:
    if response_format is None or response_format.type == "text":
        return OutputFormat()
    if response_format.type == "json_object":
        return OutputFormat(type="json_object")
    assert response_format.json_schema is not None
    return OutputFormat(type="json_schema", schema=response_format.json_schema.schema_)


def embedding_request(embeddings: EmbeddingsRequest) -> EmbeddingRequest:
    texts = embeddings.input
    return EmbeddingRequest(texts=(texts,) if isinstance(texts, str) else tuple(texts))


# Answers ---------------------------------------------------------------------------------------

STARTED = int(time.time())  # the models' `created`: when this server loaded them


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def logprobs_content(positions: list[dict[str, Any]], top_logprobs: int) -> list[dict[str, Any]]:
    """The engine's per-token logprobs in OpenAI's shape, with the UTF-8 bytes of each token."""
    return [
        {
            **_token(position["token"], position["logprob"]),
            "top_logprobs": [_token(top["token"], top["logprob"]) for top in position["top"][:top_logprobs]],
        }
        for position in positions
    ]


def _token(text: str, logprob: float) -> dict[str, Any]:
    return {"token": text, "logprob": logprob, "bytes": list(text.encode())}


def chat_completion(*, id: str, created: int, model: str, choices: list[dict[str, Any]],
                    usage: dict[str, Any]) -> dict[str, Any]:
    return {"id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": choices, "usage": usage}


def completion_choice(index: int, text: str, finish_reason: str | None,
                      logprobs: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {
        "index": index,
        "message": {"role": "assistant", "content": text},
        "logprobs": {"content": logprobs} if logprobs is not None else None,
        "finish_reason": finish_reason or "stop",
    }


def chunk(*, id: str, created: int, model: str, choices: list[dict[str, Any]],
          usage: dict[str, Any] | None = None, include_usage: bool = False) -> dict[str, Any]:
    """One `chat.completion.chunk`; with include_usage every chunk carries `usage` (null until the last)."""
    body = {"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": choices}
    if include_usage:
        body["usage"] = usage
    return body


def chunk_choice(index: int, delta: dict[str, Any], finish_reason: str | None,
                 logprobs: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {
        "index": index,
        "delta": delta,
        "logprobs": {"content": logprobs} if logprobs is not None else None,
        "finish_reason": finish_reason,
    }


def error_body(error: errors.WaiError) -> dict[str, Any]:
    return {"error": {"message": error.message, "type": error.openai_type, "param": error.param,
                      "code": str(error.code)}}


def embedding_list(vectors: list[list[float]], encoding_format: str, model: str,
                   prompt_tokens: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": index, "embedding": _encoded(vector, encoding_format)}
                 for index, vector in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def _encoded(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        # Little-endian float32, as OpenAI sends it and its SDK decodes it.
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


def model_list(entries: list[Entry], created: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": entry.name, "object": "model", "created": created, "owned_by": entry.author or "wai"}
                 for entry in entries],
    }
