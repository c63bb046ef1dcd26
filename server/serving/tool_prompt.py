"""What the model is told about the tools and what it is allowed to write.

Llama 3 8B Instruct has no tool tokens. As in Llama 3.1's JSON tool calling, the tools are described in
a system message, and the model writes one JSON object: `{"name": <tool>, "parameters": {...}}`
to call a tool or, where it may reply in words instead (`auto`), `{"content": "<the text>"}`.
Structured decoding holds the model to a JSON schema of exactly these objects (`call_schema`), each
tool's own `parameters` schema inside its branch, so a call always parses and always matches its
tool's schema. One call per turn (as Llama 3.1's format); a tool loop makes one call per turn.

History is rendered for templates that know no tools: an assistant turn that called a tool shows the
call as the JSON the model writes, and a `tool` message stays a turn of role `tool` whose content is
the result (the Llama 3 and SmolLM2 templates render any role as its own turn).
"""

from __future__ import annotations

import json
from typing import Any

from server.serving.requests import Message, OutputFormat, Tool, ToolCall, ToolUse

TEXT_OUTPUT = {
    "type": "object",
    "properties": {"content": {"type": "string"}},
    "required": ["content"],
    "additionalProperties": False,
}


def conversation(messages: tuple[Message, ...], use: ToolUse | None) -> list[dict[str, Any]]:
    """The messages as the chat template gets them: the tools described in the system message, and
    past calls and their results in turns the model can read."""
    rendered = [_rendered(message) for message in messages]
    if use is None or not use.active:
        return rendered
    preamble = tools_preamble(use)
    if rendered and rendered[0].get("role") == "system":
        first = rendered[0]
        return [{**first, "content": f"{first.get('content') or ''}\n\n{preamble}".lstrip()}, *rendered[1:]]
    return [{"role": "system", "content": preamble}, *rendered]


def _rendered(message: Message) -> dict[str, str]:
    if message.role == "assistant" and message.tool_calls:
        written = "\n".join(_as_written(call) for call in message.tool_calls)
        text = message.content
        return {"role": "assistant", "content": f"{text}\n{written}".lstrip() if text else written}
    return {"role": message.role, "content": message.content}


def _as_written(call: ToolCall) -> str:
    """A past call as the JSON the model writes for a call."""
    return json.dumps({"name": call.name, "parameters": call.arguments}, ensure_ascii=False)


def _as_openai(tool: Tool) -> dict[str, Any]:
    """A tool as Llama 3.1's JSON tool calling lists it (OpenAI's function shape)."""
    function = {"name": tool.name, "description": tool.description, "parameters": tool.parameters}
    return {"type": "function", "function": function}


def tools_preamble(use: ToolUse) -> str:
    """The system message's part on tools, in Llama 3.1's words for JSON tool calling."""
    listed = "\n\n".join(json.dumps(_as_openai(tool), ensure_ascii=False) for tool in use.tools)
    call_format = '{"name": function name, "parameters": dictionary of argument name and its value}'
    if use.mode == "function":
        ask = f"Call the function {use.name} now: respond with a JSON object of the form {call_format}."
    elif use.mode == "required":
        ask = f"Call one of these functions now: respond with a JSON object of the form {call_format}."
    else:
        ask = (
            f"To call a function, respond with a JSON object of the form {call_format}. "
            'To answer without calling a function, respond with {"content": your answer as a string}.'
        )
    return ("You have access to the following functions. " + ask + " Do not use variables.\n\n" + listed).strip()


def call_schema(use: ToolUse) -> OutputFormat:
    """The JSON schema the output is decoded with: one branch per callable tool, and text with auto."""
    branches: list[dict[str, Any]] = []
    definitions: dict[str, Any] = {}
    for tool in use.callable:
        parameters, tool_definitions = _hoisted(tool)
        definitions.update(tool_definitions)
        branches.append(
            {
                "type": "object",
                "properties": {"name": {"const": tool.name}, "parameters": parameters},
                "required": ["name", "parameters"],
                "additionalProperties": False,
            }
        )
    if use.mode == "auto":
        branches.append(TEXT_OUTPUT)
    schema: dict[str, Any] = branches[0] if len(branches) == 1 else {"anyOf": branches}
    if definitions:
        schema = {**schema, "$defs": definitions}
    return OutputFormat(type="json_schema", schema=schema)


def _hoisted(tool: Tool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The tool's parameters as a branch of the output schema: its `$defs` (or `definitions`) move to
    the output's root under names of this tool, and its local `$ref`s follow them."""
    parameters = {key: value for key, value in tool.parameters.items() if key not in ("$schema", "$id")}
    definitions: dict[str, Any] = {}
    for key in ("$defs", "definitions"):
        for name, definition in parameters.pop(key, {}).items():
            definitions[f"{tool.name}.{key}.{name}"] = definition

    def moved(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: _moved_ref(v, tool.name) if k == "$ref" else moved(v) for k, v in value.items()}
        if isinstance(value, list):
            return [moved(item) for item in value]
        return value

    return moved(parameters), {name: moved(definition) for name, definition in definitions.items()}


def _moved_ref(ref: Any, tool_name: str) -> Any:
    for key in ("$defs", "definitions"):
        prefix = f"#/{key}/"
        if isinstance(ref, str) and ref.startswith(prefix):
            return f"#/$defs/{tool_name}.{key}.{ref.removeprefix(prefix)}"
    return ref
