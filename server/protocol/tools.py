"""Tools on the wire for every protocol: read into typed requests, and the model's calls written.

The tools a request offers, its tool_choice and the past calls in its messages are read into the
request vocabulary (serving/requests.py); the calls the model makes are written back, whole and
streamed.

Each tool rule is written once, here: the Workers AI forms (prompt or messages, a tool flat or
wrapped as `{"type": "function", "function": ...}`) and OpenAI's pydantic tools all reach
`read_tool`, so the same tool gets the same verdict everywhere. `description` and `parameters` may
be left out, as OpenAI allows: a tool without parameters takes none.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

import jsonschema

from server import errors
from server.serving.requests import OutputFormat, Tool, ToolCall, ToolUse
from server.serving.tool_calls import CallPiece

# OpenAI's rule for function names; it also keeps a name a plain JSON string.
TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
MODES = ("auto", "none", "required")
NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}
Mode = Literal["auto", "none", "required", "function"]
ToolChoice = tuple[Mode | None, str | None]  # the mode (None: the default) and, with "function", the tool

# The tool as the published Workers AI input schema describes it; read_tool holds the rules.
_STRING = {"type": "string"}
_FUNCTION_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "1 to 64 letters, digits, underscores or dashes."},
        "description": _STRING,
        "parameters": {"type": "object", "description": "A JSON Schema of an object; none: no arguments."},
    },
    "required": ["name"],
}
TOOL_SCHEMA = {
    "oneOf": [
        _FUNCTION_SCHEMA,
        {
            "type": "object",
            "properties": {"type": {"type": "string", "enum": ["function"]}, "function": _FUNCTION_SCHEMA},
            "required": ["type", "function"],
        },
    ]
}


# --- what the client asked ----------------------------------------------------------------------


def tool_use(tools: Any, tool_choice: Any, output: OutputFormat, raw: bool = False) -> ToolUse | None:
    """A request's `tools` and `tool_choice` in either Workers AI shape; None when it offers no tools
    and names no choice. Bad tools or a choice they cannot meet are a 400 naming the field."""
    if tools is None and tool_choice is None:
        return None
    if tools is not None and not isinstance(tools, list):
        raise errors.invalid_tools("tools must be an array")
    offered = tuple(_read_wire_tool(tool, f"tools.{index}") for index, tool in enumerate(tools or []))
    return checked_use(offered, read_tool_choice(tool_choice), output, raw)


def checked_use(tools: tuple[Tool, ...], choice: ToolChoice, output: OutputFormat, raw: bool = False) -> ToolUse:
    """The tools, each already read, with the choice among them: the rules between them."""
    names = [tool.name for tool in tools]
    for offered in names:
        if names.count(offered) > 1:
            raise errors.invalid_tools(f"two tools are named {offered!r}; names must be unique")
    mode, name = choice
    if mode is None:
        mode = "auto" if tools else "none"
    if mode == "required" and not tools:
        raise errors.invalid_tools("tool_choice required needs tools", param="tool_choice")
    if name is not None and name not in names:
        raise errors.invalid_tools(f"tool_choice names {name!r}, which is not among the tools", param="tool_choice")
    use = ToolUse(tools, mode, name)
    if use.active and raw:
        raise errors.invalid_tools("tools need the chat template; raw must be false", param="raw")
    if use.active and output.type != "text":
        raise errors.invalid_tools(
            "response_format cannot be combined with tools unless tool_choice is none", param="response_format"
        )
    return use


def _read_wire_tool(tool: Any, where: str) -> Tool:
    """Either Workers AI shape: `{name, description, parameters}` or `{type: "function", function: {...}}`."""
    if isinstance(tool, dict) and "function" in tool:
        if tool.get("type", "function") != "function":
            raise errors.invalid_tools(f"{where}.type must be 'function'", param=f"{where}.type")
        tool, where = tool["function"], f"{where}.function"
    if not isinstance(tool, dict):
        raise errors.invalid_tools(f"{where} must be an object with a name", param=where)
    return read_tool(tool.get("name"), tool.get("description"), tool.get("parameters"), where)


def read_tool(name: Any, description: Any, parameters: Any, where: str) -> Tool:
    """One tool, from any protocol: every rule a tool must meet."""
    if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
        raise errors.invalid_tools(
            f"{where}.name must be 1 to 64 letters, digits, underscores or dashes", param=f"{where}.name"
        )
    if description is not None and not isinstance(description, str):
        raise errors.invalid_tools(f"{where}.description must be a string", param=f"{where}.description")
    if parameters is None:
        parameters = NO_PARAMETERS
    _check_parameters(parameters, f"{where}.parameters")
    return Tool(name, description or "", parameters)


def _check_parameters(parameters: Any, where: str) -> None:
    if not isinstance(parameters, dict):
        raise errors.invalid_tools(f"{where} must be a JSON Schema object", param=where)
    if parameters.get("type", "object") != "object":
        raise errors.invalid_tools(f"{where} must describe an object (type 'object')", param=where)
    try:
        jsonschema.validators.validator_for(parameters).check_schema(parameters)
    except jsonschema.SchemaError as exc:
        at = "/".join(str(part) for part in exc.absolute_path)
        raise errors.invalid_tools(
            f"{where} is not a valid JSON Schema: {exc.message} at '/{at}'", param=where
        ) from exc


def read_tool_choice(choice: Any) -> ToolChoice:
    """`auto` (the default with tools), `none` (the default without), `required`, or a named tool:
    `{"type": "function", "function": {"name": ...}}` (also `{"name": ...}`)."""
    if choice is None:
        return None, None
    if isinstance(choice, str):
        if choice not in MODES:
            raise errors.invalid_tools(
                f"tool_choice must be auto, none, required or a function, not {choice!r}", param="tool_choice"
            )
        return choice, None  # type: ignore[return-value]
    function = choice.get("function", choice) if isinstance(choice, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str) or (isinstance(choice, dict) and choice.get("type", "function") != "function"):
        raise errors.invalid_tools(
            'tool_choice must be auto, none, required or {"type": "function", "function": {"name": ...}}',
            param="tool_choice",
        )
    return "function", name


def past_calls(calls: Any, where: str) -> tuple[ToolCall, ...]:
    """The calls of a past assistant turn: Workers AI's flat `{name, arguments}` or OpenAI's
    `{id, type, function: {name, arguments}}` with the arguments as JSON text."""
    if calls is None:
        return ()
    if not isinstance(calls, list):
        raise errors.invalid_tools(f"{where} must be an array", param=where)
    return tuple(_past_call(call, f"{where}.{index}") for index, call in enumerate(calls))


def _past_call(call: Any, where: str) -> ToolCall:
    if not isinstance(call, dict):
        raise errors.invalid_tools(f"{where} must be an object with a name", param=where)
    function: dict[str, Any] = call["function"] if isinstance(call.get("function"), dict) else call
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            pass  # kept as the client wrote it; the model reads it as it is
    return ToolCall(str(call.get("id") or ""), str(function.get("name")), arguments)


# --- the model's calls, written -----------------------------------------------------------------


def arguments_text(call: ToolCall) -> str:
    """A call's arguments as the JSON text OpenAI's `function.arguments` carries."""
    return json.dumps(call.arguments, ensure_ascii=False)


def workers_ai_calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    """Workers AI's `tool_calls`: `[{name, arguments}]`, the arguments an object."""
    return [{"name": call.name, "arguments": call.arguments} for call in calls]


def anthropic_tool_uses(calls: list[ToolCall]) -> list[dict[str, Any]]:
    """Anthropic's `tool_use` content blocks: ids, names, and the arguments as the `input` object."""
    return [{"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments} for call in calls]


def openai_calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    """OpenAI's `message.tool_calls`: ids, type function, and the arguments as JSON text."""
    return [
        {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": arguments_text(call)}}
        for call in calls
    ]


def openai_call_deltas(pieces: list[CallPiece]) -> list[dict[str, Any]]:
    """OpenAI's streamed `delta.tool_calls`: the first piece of a call has its id, type and name,
    the others only arguments text; the client joins them by `index`."""
    deltas = []
    for piece in pieces:
        function: dict[str, Any] = {"arguments": piece.arguments}
        delta: dict[str, Any] = {"index": piece.index}
        if piece.name is not None:
            delta.update(id=piece.id, type="function")
            function = {"name": piece.name, **function}
        deltas.append({**delta, "function": function})
    return deltas
