"""OpenAI's Responses API requests, read into the neutral TextRequest every protocol builds.

`POST /v1/responses`: `input` as a string or a list of items (messages, function calls and their
outputs), `instructions`, `max_output_tokens`, sampling, `text.format`, function `tools` with
`tool_choice`, `stream`, `store` and `previous_response_id` (the stored conversation goes first). Built-in
tools, reasoning options and other fields wai cannot honour are a 400 naming the field, never ignored.
The answers are responses_answers.py's.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from server import errors
from server.protocol.tools import ToolChoice, checked_use, read_tool
from server.serving.requests import Message, OutputFormat, TextRequest, ToolCall, ToolUse


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class InputText(_Strict):
    type: Literal["input_text", "output_text", "text"]
    text: str
    annotations: list[Any] | None = None  # an earlier answer's output_text, sent back


class MessageItem(_Strict):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[InputText]
    id: str | None = None
    status: str | None = None

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class FunctionCallItem(_Strict):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(_Strict):
    type: Literal["function_call_output"]
    call_id: str
    output: str
    id: str | None = None
    status: str | None = None


Item = Annotated[MessageItem | FunctionCallItem | FunctionCallOutputItem, Field(discriminator="type")]


class FunctionTool(_Strict):
    type: Literal["function"]
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedFunction(_Strict):
    type: Literal["function"]
    name: str


class TextFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextOptions(_Strict):
    format: TextFormat | None = None
    verbosity: Literal["medium"] | None = None


class ResponseRequest(_Strict):
    model: str
    input: str | list[Item]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    text: TextOptions | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool | None = None  # accepted: an answer makes at most one call
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    truncation: Literal["disabled"] | None = None


def parse(body: Any) -> ResponseRequest:
    """Validate `body`; a failure is a 400 naming the field, in OpenAI's words."""
    if not isinstance(body, dict):
        raise errors.bad_input("the body must be a JSON object")
    _refuse_built_in_tools(body)
    try:
        return ResponseRequest.model_validate({**body, "input": _typed_items(body.get("input"))})
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"] if not _is_union_tag(part))
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "is not supported by this server"
        raise errors.bad_input(f"{where}: {message}" if where else message, param=where or None) from exc


def _typed_items(given: Any) -> Any:
    """Input items with their `type`: a message may leave it out (`{"role", "content"}`), as OpenAI's allows."""
    if not isinstance(given, list):
        return given
    return [{"type": "message", **item} if isinstance(item, dict) and "type" not in item else item for item in given]


def _is_union_tag(part: Any) -> bool:
    return isinstance(part, str) and (
        "[" in part or part in {"str", "message", "function_call", "function_call_output", "function"}
    )


def _refuse_built_in_tools(body: dict[str, Any]) -> None:
    tools = body.get("tools")
    for index, tool in enumerate(tools if isinstance(tools, list) else []):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if isinstance(kind, str) and kind != "function":
            raise errors.bad_input(
                f"tools.{index}: built-in {kind} tools are not supported by this server; only function tools",
                param=f"tools.{index}.type",
            )


def conversation(asked: ResponseRequest, earlier: list[Message]) -> tuple[Message, ...]:
    """The instructions (as the system turn), the stored conversation of `previous_response_id`
    (`earlier`), then this request's input."""
    turns = [Message("system", asked.instructions)] if asked.instructions else []
    turns += [turn for turn in earlier if turn.role != "system"]
    if isinstance(asked.input, str):
        return (*turns, Message("user", asked.input))
    for item in asked.input:
        if isinstance(item, MessageItem):
            turns.append(Message("system" if item.role == "developer" else item.role, item.text))
        elif isinstance(item, FunctionCallItem):
            call = ToolCall(item.call_id, item.name, _decoded(item.arguments))
            if turns and turns[-1].role == "assistant" and not turns[-1].content:
                turns[-1] = Message("assistant", "", (*turns[-1].tool_calls, call))
            else:
                turns.append(Message("assistant", "", (call,)))
        else:
            turns.append(Message("tool", item.output, tool_call_id=item.call_id))
    return tuple(turns)


def output_turn(output: list[dict[str, Any]]) -> Message:
    """A response's own output items as the assistant turn the next `previous_response_id` starts from."""
    calls = tuple(
        ToolCall(item["call_id"], item["name"], _decoded(item["arguments"]))
        for item in output
        if item["type"] == "function_call"
    )
    text = "".join(part["text"] for item in output if item["type"] == "message" for part in item["content"])
    return Message("assistant", text, calls)


def _decoded(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def text_request(asked: ResponseRequest, turns: tuple[Message, ...]) -> TextRequest:
    output = _output_format(asked.text)
    sampling = {"max_tokens": asked.max_output_tokens, "temperature": asked.temperature, "top_p": asked.top_p}
    return TextRequest(
        messages=turns,
        tools=tool_use(asked, output),
        sampling={name: value for name, value in sampling.items() if value is not None},
        output=output,
        stream=asked.stream,
    )


def _output_format(text: TextOptions | None) -> OutputFormat:
    if text is None or text.format is None or text.format.type == "text":
        return OutputFormat()
    if text.format.type == "json_object":
        return OutputFormat(type="json_object")
    if text.format.schema_ is None:
        raise errors.bad_input("text.format.schema: required with json_schema", param="text.format.schema")
    return OutputFormat(type="json_schema", schema=text.format.schema_)


def tool_use(asked: ResponseRequest, output: OutputFormat) -> ToolUse | None:
    if asked.tools is None and asked.tool_choice is None:
        return None
    tools = tuple(
        read_tool(tool.name, tool.description, tool.parameters, f"tools.{index}")
        for index, tool in enumerate(asked.tools or [])
    )
    return checked_use(tools, _tool_choice(asked.tool_choice), output)


def _tool_choice(choice: Literal["auto", "none", "required"] | NamedFunction | None) -> ToolChoice:
    if isinstance(choice, NamedFunction):
        return "function", choice.name
    return choice, None


def echo(asked: ResponseRequest) -> dict[str, Any]:
    """The settings a response object repeats, as the client gave them."""
    return {
        "instructions": asked.instructions,
        "max_output_tokens": asked.max_output_tokens,
        "temperature": asked.temperature if asked.temperature is not None else 1.0,
        "top_p": asked.top_p if asked.top_p is not None else 1.0,
        "tools": [tool.model_dump(exclude_none=True) for tool in asked.tools or []],
        "tool_choice": asked.tool_choice.model_dump()
        if isinstance(asked.tool_choice, NamedFunction)
        else asked.tool_choice or "auto",
        "text": asked.text.model_dump(by_alias=True, exclude_none=True) if asked.text else {"format": {"type": "text"}},
        "parallel_tool_calls": asked.parallel_tool_calls if asked.parallel_tool_calls is not None else True,
        "previous_response_id": asked.previous_response_id,
        "store": asked.store,
        "metadata": asked.metadata or {},
        "user": asked.user,
        "truncation": "disabled",
    }
