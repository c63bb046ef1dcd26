"""Anthropic's Messages API requests, read into the neutral TextRequest every protocol builds.

`POST /v1/messages` and `/v1/messages/count_tokens`; the answers are anthropic_answers.py's.

A conversation's content blocks map onto the shared vocabulary: `system` (a string or text blocks) is
the system turn; an assistant's `tool_use` blocks are its calls; a user's `tool_result` blocks are tool
turns answering those calls, before the user's own text. Tools are read by the rules every protocol's
tools meet (protocol/tools.py). Fields wai does not support (images, documents, extended thinking,
server tools) are a 400 naming the field, never ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from server import errors
from server.protocol.tools import Mode, ToolChoice, checked_use, read_tool
from server.serving.requests import Message, OutputFormat, TextRequest, ToolCall, ToolUse


class _Strict(BaseModel):
    # Anthropic's API refuses fields it does not know; so does wai, so that nothing is ignored silently.
    model_config = ConfigDict(extra="forbid", strict=True)


class _Block(_Strict):
    """A content block. One sent back as the SDK read it from an answer carries fields of the answer's
    own (`caller`, `citations`, ...) as null: those say nothing and are dropped; any other unknown field
    is refused."""

    @model_validator(mode="before")
    @classmethod
    def _without_nulls(cls, given: Any) -> Any:
        return {k: v for k, v in given.items() if v is not None} if isinstance(given, dict) else given


class TextBlock(_Block):
    type: Literal["text"]
    text: str
    cache_control: dict[str, Any] | None = None  # accepted: vLLM's prefix cache needs no marks
    citations: list[Any] | None = None


class ToolUseBlock(_Block):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]
    cache_control: dict[str, Any] | None = None


class ToolResultBlock(_Block):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[TextBlock] = ""
    is_error: bool = False
    cache_control: dict[str, Any] | None = None

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(block.text for block in self.content)


Block = Annotated[TextBlock | ToolUseBlock | ToolResultBlock, Field(discriminator="type")]


class InputMessage(_Strict):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class ToolDefinition(_Strict):
    name: str
    description: str | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None
    cache_control: dict[str, Any] | None = None


class ToolChoiceSetting(_Strict):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None  # accepted: an answer makes at most one call


class _Conversation(_Strict):
    model: str
    messages: list[InputMessage] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: ToolChoiceSetting | None = None


class MessagesRequest(_Conversation):
    max_tokens: int = Field(ge=1)  # required, as Anthropic's
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=1)
    stream: bool = False
    metadata: dict[str, Any] | None = None


class CountTokensRequest(_Conversation):
    pass


# Anthropic's type tags of content blocks wai cannot take, named in the 400.
_UNSUPPORTED_BLOCKS = ("image", "document", "thinking", "redacted_thinking", "server_tool_use", "search_result")


def parse(model: type[_Conversation], body: Any) -> Any:
    """Validate `body` as `model`; a failure is a 400 naming the field."""
    if not isinstance(body, dict):
        raise errors.bad_input("the body must be a JSON object")
    _refuse_unsupported_blocks(body)
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"] if not _is_union_tag(part))
        message = first["msg"].removeprefix("Value error, ")
        raise errors.bad_input(f"{where}: {message}" if where else message, param=where or None) from exc


def _is_union_tag(part: Any) -> bool:
    # pydantic names a union member in an error's location ("list[...]", "str", a block's tag).
    return isinstance(part, str) and ("[" in part or part in {"str", "text", "tool_use", "tool_result"})


def _refuse_unsupported_blocks(body: dict[str, Any]) -> None:
    messages = body.get("messages")
    for index, message in enumerate(messages if isinstance(messages, list) else []):
        content = message.get("content") if isinstance(message, dict) else None
        for place, block in enumerate(content if isinstance(content, list) else []):
            kind = block.get("type") if isinstance(block, dict) else None
            if kind in _UNSUPPORTED_BLOCKS:
                raise errors.bad_input(
                    f"messages.{index}.content.{place}: {kind} blocks are not supported by this model",
                    param=f"messages.{index}.content.{place}",
                )


def text_request(asked: MessagesRequest) -> TextRequest:
    """The same neutral request the other protocols build."""
    sampling = {
        "max_tokens": asked.max_tokens,
        "temperature": asked.temperature,
        "top_p": asked.top_p,
        "top_k": asked.top_k,
        "stop": asked.stop_sequences or None,
    }
    return TextRequest(
        messages=conversation(asked),
        tools=tool_use(asked),
        sampling={name: value for name, value in sampling.items() if value is not None},
        stream=asked.stream,
    )


def conversation(asked: _Conversation) -> tuple[Message, ...]:
    """The system turn, then each message's turns: tool results, text, and an assistant's calls."""
    turns: list[Message] = []
    if asked.system:
        system = asked.system if isinstance(asked.system, str) else "".join(block.text for block in asked.system)
        turns.append(Message("system", system))
    for message in asked.messages:
        turns += _turns(message)
    return tuple(turns)


def _turns(message: InputMessage) -> list[Message]:
    if isinstance(message.content, str):
        return [Message(message.role, message.content)]
    results = [b for b in message.content if isinstance(b, ToolResultBlock)]
    text = "".join(b.text for b in message.content if isinstance(b, TextBlock))
    calls = tuple(ToolCall(b.id, b.name, b.input) for b in message.content if isinstance(b, ToolUseBlock))
    turns = [Message("tool", result.text, tool_call_id=result.tool_use_id) for result in results]
    if text or calls or not results:
        turns.append(Message(message.role, text, calls))
    return turns


def tool_use(asked: _Conversation) -> ToolUse | None:
    if asked.tools is None and asked.tool_choice is None:
        return None
    tools = tuple(
        read_tool(tool.name, tool.description, tool.input_schema, f"tools.{index}")
        for index, tool in enumerate(asked.tools or [])
    )
    return checked_use(tools, _tool_choice(asked.tool_choice), OutputFormat())


# Anthropic's tool_choice types in the shared vocabulary's modes; `tool` names the one to call.
_MODES: dict[str, Mode] = {"auto": "auto", "any": "required", "none": "none"}


def _tool_choice(choice: ToolChoiceSetting | None) -> ToolChoice:
    if choice is None:
        return None, None
    if choice.type == "tool":
        if not choice.name:
            raise errors.invalid_tools("tool_choice: a choice of type tool needs the tool's name", "tool_choice")
        return "function", choice.name
    return _MODES[choice.type], None
