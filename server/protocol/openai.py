"""OpenAI's requests: chat completions, completions and embeddings (the answers: openai_answers.py).

Requests are validated by the pydantic models below, whose sampling fields are made from
protocol/sampling.py (OPENAI_SAMPLING_FIELDS), and become the same TextRequest / EmbeddingRequest
the Workers AI endpoint builds. Pydantic's errors become one clear message with `param` set.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from server import errors
from server.protocol.sampling import OPENAI_SAMPLING_FIELDS
from server.protocol.tools import ToolChoice, checked_use, past_calls, read_tool
from server.protocol.workers_ai import MAX_TEXTS_PER_REQUEST
from server.serving.requests import EmbeddingRequest, Message, OutputFormat, TextRequest, ToolUse

_JSON_TYPES: dict[str, type] = {"integer": int, "number": float}


def _bounded(name: str) -> Any:
    """An optional field (None: not given) with the range protocol/sampling.py gives it."""
    spec = OPENAI_SAMPLING_FIELDS[name]
    return Field(None, ge=spec.get("minimum"), le=spec.get("maximum"), description=spec["description"])


class _Request(BaseModel):
    # Strict: "0.5" is not a number and true is not 1. Unknown fields are ignored, as OpenAI does.
    model_config = ConfigDict(strict=True, extra="ignore")


class ChatMessage(_Request):
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


class Function(_Request):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(_Request):
    type: Literal["function"]
    function: Function


class NamedFunction(_Request):
    name: str


class NamedToolChoice(_Request):
    type: Literal["function"]
    function: NamedFunction


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


class _TextRequestFields(_Request):
    """What chat completions and completions share, besides the sampling table."""

    model: str
    max_completion_tokens: int | None = _bounded("max_tokens")
    stop: Any = Field(None, validate_default=True)
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

    @field_validator("stream_options")
    @classmethod
    def _only_when_streaming(cls, options: StreamOptions | None, info: ValidationInfo) -> StreamOptions | None:
        if options is not None and not info.data.get("stream"):
            raise ValueError("allowed only when stream is true")
        return options

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def sampling(self, logprobs: int | None) -> dict[str, Any]:
        """The sampling fields given, by their names in protocol/sampling.py, with OpenAI's own
        spellings (max_completion_tokens, stop, logprobs) under the names the engine mapping reads."""
        given = {name: getattr(self, name) for name in _SAMPLING_FIELDS}
        if self.max_completion_tokens is not None:
            given["max_tokens"] = self.max_completion_tokens
        given.update(stop=self.stop or None, logprobs=logprobs)
        return {name: value for name, value in given.items() if value is not None}


# The sampling table's fields, as optional pydantic fields; top_logprobs is declared by the request
# that spells it so.
_SAMPLING_FIELDS: dict[str, Any] = {
    name: (_JSON_TYPES[spec["type"]] | None, _bounded(name))
    for name, spec in OPENAI_SAMPLING_FIELDS.items()
    if name != "top_logprobs"
}
_SampledRequest: Any = create_model("_SampledRequest", __base__=_TextRequestFields, **_SAMPLING_FIELDS)


class ChatCompletionRequest(_SampledRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool = False
    top_logprobs: int | None = _bounded("top_logprobs")
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    # Whether the tools can be met (a named tool among them, `required` with tools) is protocol/tools.py's.
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None  # accepted; an answer makes at most one call

    @field_validator("top_logprobs")
    @classmethod
    def _only_with_logprobs(cls, top_logprobs: int | None, info: ValidationInfo) -> int | None:
        if top_logprobs is not None and not info.data.get("logprobs"):
            raise ValueError("allowed only when logprobs is true")
        return top_logprobs


class CompletionRequest(_SampledRequest):
    """The legacy completions API: a prompt in, text out; no chat template."""

    prompt: Any
    # Here logprobs is the number of most likely tokens to return (0 to 5), not a switch.
    logprobs: Annotated[int | None, Field(ge=0, le=5)] = None
    echo: bool = False
    suffix: str | None = None
    best_of: Annotated[int | None, Field(ge=1)] = None

    @field_validator("prompt")
    @classmethod
    def _one_text_prompt(cls, prompt: Any) -> str:
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise ValueError(
                "must be a string (or an array of one string); token arrays and batches of prompts are not supported"
            )
        if not prompt:
            raise ValueError("must not be empty")
        return prompt

    @field_validator("echo", "suffix")
    @classmethod
    def _not_supported(cls, value: Any) -> Any:
        if value:
            raise ValueError("is not supported")
        return value

    @field_validator("best_of")
    @classmethod
    def _as_many_as_n(cls, best_of: int | None, info: ValidationInfo) -> int | None:
        if best_of is not None and best_of != (info.data.get("n") or 1):
            raise ValueError("other than n is not supported")
        return best_of


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
        code = _openai_code(first["type"])
        raise errors.bad_input(f"{param}: {message}" if param else message, param=param, openai_code=code) from exc


def _openai_code(pydantic_type: str) -> str | None:
    """OpenAI's code for a parameter that is missing or of the wrong type; none for other bad values."""
    if pydantic_type == "missing":
        return errors.MISSING_PARAMETER
    if pydantic_type.endswith("_type") or pydantic_type == "int_from_float":
        return errors.WRONG_TYPE
    return None


def _is_type_tag(part: Any) -> bool:
    # pydantic adds a union member's type to an error's location (e.g. "list[str]"); users never wrote it.
    return isinstance(part, str) and ("[" in part or part in {"str", "int", "float", "bool"})


def text_request(chat: ChatCompletionRequest) -> TextRequest:
    """The same neutral request the Workers AI endpoint builds."""
    output = _output_format(chat.response_format)
    return TextRequest(
        messages=tuple(_message(message, f"messages.{index}") for index, message in enumerate(chat.messages)),
        tools=_tool_use(chat, output),
        sampling=chat.sampling(logprobs=(chat.top_logprobs or 0) if chat.logprobs else None),
        output=output,
        stream=chat.stream,
    )


def _message(message: ChatMessage, where: str) -> Message:
    calls = past_calls(message.tool_calls, f"{where}.tool_calls")
    return Message(message.role, message.content, calls, message.tool_call_id)


def _tool_use(chat: ChatCompletionRequest, output: OutputFormat) -> ToolUse | None:
    """The tools, each read by the rules every protocol's tools meet (protocol/tools.py)."""
    if chat.tools is None and chat.tool_choice is None:
        return None
    tools = tuple(
        read_tool(tool.function.name, tool.function.description, tool.function.parameters, f"tools.{index}.function")
        for index, tool in enumerate(chat.tools or [])
    )
    return checked_use(tools, _tool_choice(chat.tool_choice), output)


def _tool_choice(choice: Literal["auto", "none", "required"] | NamedToolChoice | None) -> ToolChoice:
    if isinstance(choice, NamedToolChoice):
        return "function", choice.function.name
    return choice, None


def completion_text_request(completion: CompletionRequest) -> TextRequest:
    """The prompt goes to the model as it is, as `raw` does on the run endpoint."""
    return TextRequest(
        prompt=completion.prompt, raw=True, sampling=completion.sampling(completion.logprobs), stream=completion.stream
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
