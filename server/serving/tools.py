"""Tool calls for every protocol: the tools offered, what the model is told and may write, its answer.

The answer is read back as text or as a call.

Llama 3 8B Instruct has no tool tokens. As in Llama 3.1's JSON tool calling, the tools are described in
a system message, and the model answers with one JSON object: `{"name": <tool>, "parameters": {...}}`
to call a tool or, where it may answer in words instead (`auto`), `{"content": "<the answer>"}`.
Structured decoding holds the model to a JSON schema of exactly these objects, each tool's own
`parameters` schema inside its branch, so a call always parses and always matches its tool's schema.
One call per answer (as Llama 3.1's format); a tool loop makes one call per turn.

History is rendered for templates that know no tools: an assistant turn that called a tool shows the
call as the JSON the model writes, and a `tool` message stays a turn of role `tool` whose content is
the result (the Llama 3 and SmolLM2 templates render any role as its own turn).
"""

from __future__ import annotations

import json
import re
import secrets
import string
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Literal

import jsonschema
from referencing.exceptions import Unresolvable

from server import errors
from server.engine.types import TextDelta
from server.serving.requests import OutputFormat

# OpenAI's rule for function names; it also keeps a name a plain JSON string.
TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
MODES = ("auto", "none", "required")
NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}
TEXT_ANSWER = {
    "type": "object",
    "properties": {"content": {"type": "string"}},
    "required": ["content"],
    "additionalProperties": False,
}
_ID_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # a JSON Schema of an object

    def as_openai(self) -> dict[str, Any]:
        function = {"name": self.name, "description": self.description, "parameters": self.parameters}
        return {"type": "function", "function": function}


@dataclass(frozen=True)
class ToolUse:
    """The tools a request offers and whether the model must, may or must not call one."""

    tools: tuple[Tool, ...]
    mode: Literal["auto", "none", "required", "function"] = "auto"
    name: str | None = None  # the tool to call, with mode "function"

    @property
    def active(self) -> bool:
        """Whether the answer is decoded as a call (or, with auto, a call or text)."""
        return bool(self.tools) and self.mode != "none"

    @property
    def callable(self) -> tuple[Tool, ...]:
        return tuple(tool for tool in self.tools if self.mode != "function" or tool.name == self.name)

    def tool(self, name: str) -> Tool:
        return next(tool for tool in self.tools if tool.name == name)


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class CallPiece:
    """Part of a call as it streams: the first piece has the id and name, the rest arguments text;
    all the `arguments` pieces of a call, joined, are its arguments as JSON text."""

    index: int
    arguments: str
    id: str | None = None
    name: str | None = None


@dataclass
class AnswerDelta(TextDelta):
    """A delta of an answer decoded with tools: `text` is answer text only; `pieces` stream a call;
    `calls` are the complete calls, on the choice's last delta."""

    pieces: list[CallPiece] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)


def new_call_id() -> str:
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


# --- what the client asked ----------------------------------------------------------------------


def tool_use(tools: Any, tool_choice: Any, output: OutputFormat | None = None, raw: bool = False) -> ToolUse | None:
    """The request's tools and tool_choice, checked; None when it offers no tools and names no choice.
    Bad tools or a choice they cannot meet are a 400 naming the field."""
    if tools is None and tool_choice is None:
        return None
    offered = parse_tools(tools)
    mode, name = parse_tool_choice(tool_choice, offered)
    use = ToolUse(offered, mode, name)
    if use.active and raw:
        raise errors.invalid_tools("tools need the chat template; raw must be false", param="raw")
    if use.active and output is not None and output.type != "text":
        raise errors.invalid_tools(
            "response_format cannot be combined with tools unless tool_choice is none", param="response_format"
        )
    return use


def parse_tools(tools: Any) -> tuple[Tool, ...]:
    if tools is None:
        return ()
    if not isinstance(tools, list):
        raise errors.invalid_tools("tools must be an array")
    parsed = tuple(_parse_tool(tool, f"tools.{index}") for index, tool in enumerate(tools))
    names = [tool.name for tool in parsed]
    for name in names:
        if names.count(name) > 1:
            raise errors.invalid_tools(f"two tools are named {name!r}; names must be unique")
    return parsed


def _parse_tool(tool: Any, where: str) -> Tool:
    """Either Workers AI shape: `{name, description, parameters}` or `{type: "function", function: {...}}`."""
    if isinstance(tool, dict) and "function" in tool:
        if tool.get("type", "function") != "function":
            raise errors.invalid_tools(f"{where}.type must be 'function'", param=f"{where}.type")
        tool, where = tool["function"], f"{where}.function"
    if not isinstance(tool, dict):
        raise errors.invalid_tools(f"{where} must be an object with a name", param=where)
    name = tool.get("name")
    if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
        raise errors.invalid_tools(
            f"{where}.name must be 1 to 64 letters, digits, underscores or dashes", param=f"{where}.name"
        )
    description = tool.get("description") or ""
    if not isinstance(description, str):
        raise errors.invalid_tools(f"{where}.description must be a string", param=f"{where}.description")
    parameters = tool.get("parameters")
    if parameters is None:
        parameters = NO_PARAMETERS
    _check_parameters(parameters, f"{where}.parameters")
    return Tool(name, description, parameters)


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


def parse_tool_choice(choice: Any, tools: tuple[Tool, ...]) -> tuple[Any, str | None]:
    """`auto` (the default with tools), `none` (the default without), `required`, or a named tool:
    `{"type": "function", "function": {"name": ...}}` (also `{"name": ...}`)."""
    if choice is None:
        return ("auto" if tools else "none"), None
    if isinstance(choice, str):
        if choice not in MODES:
            raise errors.invalid_tools(
                f"tool_choice must be auto, none, required or a function, not {choice!r}", param="tool_choice"
            )
        if choice == "required" and not tools:
            raise errors.invalid_tools("tool_choice required needs tools", param="tool_choice")
        return choice, None
    function = choice.get("function", choice) if isinstance(choice, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str) or (isinstance(choice, dict) and choice.get("type", "function") != "function"):
        raise errors.invalid_tools(
            'tool_choice must be auto, none, required or {"type": "function", "function": {"name": ...}}',
            param="tool_choice",
        )
    if name not in {tool.name for tool in tools}:
        raise errors.invalid_tools(f"tool_choice names {name!r}, which is not among the tools", param="tool_choice")
    return "function", name


# --- what the model is told and allowed to write ------------------------------------------------


def conversation(messages: list[dict[str, Any]], use: ToolUse | None) -> list[dict[str, Any]]:
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


def _rendered(message: dict[str, Any]) -> dict[str, Any]:
    calls = message.get("tool_calls")
    if message.get("role") == "assistant" and isinstance(calls, list) and calls:
        written = "\n".join(_as_written(call) for call in calls)
        text = message.get("content") or ""
        return {"role": "assistant", "content": f"{text}\n{written}".lstrip() if text else written}
    return message


def _as_written(call: Any) -> str:
    """A past call (Workers AI's flat `{name, arguments}` or OpenAI's `{function: {name, arguments}}`)
    as the JSON the model writes for a call."""
    if not isinstance(call, dict):
        return json.dumps(call)
    function: dict[str, Any] = call["function"] if isinstance(call.get("function"), dict) else call
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            pass
    return json.dumps({"name": function.get("name"), "parameters": arguments}, ensure_ascii=False)


def tools_preamble(use: ToolUse) -> str:
    """The system message's part on tools, in Llama 3.1's words for JSON tool calling."""
    listed = "\n\n".join(json.dumps(tool.as_openai(), ensure_ascii=False) for tool in use.tools)
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


def answer_format(use: ToolUse) -> OutputFormat:
    """The JSON schema the answer is decoded with: one branch per callable tool, and text with auto."""
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
        branches.append(TEXT_ANSWER)
    schema: dict[str, Any] = branches[0] if len(branches) == 1 else {"anyOf": branches}
    if definitions:
        schema = {**schema, "$defs": definitions}
    return OutputFormat(type="json_schema", schema=schema)


def _hoisted(tool: Tool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The tool's parameters as a branch of the answer schema: its `$defs` (or `definitions`) move to
    the answer's root under names of this tool, and its local `$ref`s follow them."""
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


# --- the answer, read back -------------------------------------------------------------------

_CALL_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"([A-Za-z0-9_-]{1,64})"\s*,\s*"parameters"\s*:\s*')
_TEXT_HEAD = re.compile(r'\s*\{\s*"content"\s*:\s*"')
# The end of a string body that cannot be decoded yet: a lone backslash, a \u escape still being
# written, or a high surrogate whose low half has not come.
_UNFINISHED_ESCAPE = re.compile(r"(?<!\\)(\\\\)*(\\|\\u[0-9A-Fa-f]{0,3}|\\u[dD][89abAB][0-9A-Fa-f]{2})$")


class AnswerReader:
    """One choice's JSON answer read as it grows: the text of `{"content": ...}` as it comes, a
    call's name as soon as it is written and its arguments text as it is written."""

    def __init__(self, use: ToolUse):
        self.use = use
        self.raw = ""
        self.kind: Literal["call", "text"] | None = None
        self.name = ""  # the tool called, once written
        self.text = ""  # the answer text decoded so far
        self.call_id = new_call_id()
        self.call_started = False
        self._start = 0  # where the arguments or the text body start in `raw`
        self._sent = 0  # arguments characters streamed so far (from `_start`)
        self._decoded = 0  # text body characters decoded so far (from `_start`), always whole escapes
        self._scan = _ArgumentsScan()

    def read(self, text: str) -> tuple[str, list[CallPiece]]:
        """New answer text and call pieces once `text` is added."""
        self.raw += text
        if self.kind is None:
            self._find_kind()
        if self.kind == "text":
            return self._new_text(), []
        if self.kind == "call":
            return "", self._new_arguments()
        return "", []

    def _find_kind(self) -> None:
        if call := _CALL_HEAD.match(self.raw):
            self.kind, self._start = "call", call.end()
            self.name = call.group(1)
        elif text := _TEXT_HEAD.match(self.raw):
            self.kind, self._start = "text", text.end()

    def _new_text(self) -> str:
        """The text body decoded from where the last call stopped (never inside an escape)."""
        decodable = _string_body(self.raw[self._start + self._decoded :])
        while (unfinished := _UNFINISHED_ESCAPE.search(decodable)) is not None:
            decodable = decodable[: unfinished.start(2)]
        try:
            new = json.loads(f'"{decodable}"')
        except json.JSONDecodeError:
            return ""
        self._decoded += len(decodable)
        self.text += new
        return new

    def _new_arguments(self) -> list[CallPiece]:
        pieces = []
        if not self.call_started:
            self.call_started = True
            pieces.append(CallPiece(0, "", id=self.call_id, name=self.name))
        end = self._scan.feed(self.raw, self._start)
        if self._scan.begun is not None and end > self._scan.begun + self._sent:
            pieces.append(CallPiece(0, self.raw[self._scan.begun + self._sent : end]))
            self._sent = end - self._scan.begun
        return pieces

    def finish(self) -> tuple[str, list[ToolCall], list[CallPiece]]:
        """The whole answer: its text, or its call (and the call's pieces if none streamed yet).
        A call cut short (max_tokens ran out) or not matching its schema is an error, never sent."""
        try:
            answer = json.loads(self.raw)
        except json.JSONDecodeError:
            if self.kind == "text":
                return self.text, [], []  # text cut by max_tokens: what there is, as for any answer
            raise errors.tool_call_not_met() from None
        if isinstance(answer, dict) and isinstance(answer.get("content"), str) and self.use.mode == "auto":
            return answer["content"], [], []
        call = self._call(answer)
        pieces = [] if self.call_started else [CallPiece(0, json.dumps(call.arguments), id=call.id, name=call.name)]
        return "", [call], pieces

    def _call(self, answer: Any) -> ToolCall:
        if not isinstance(answer, dict) or answer.get("name") not in {tool.name for tool in self.use.callable}:
            raise errors.tool_call_not_met()
        arguments = answer.get("parameters")
        try:
            jsonschema.validate(arguments, self.use.tool(answer["name"]).parameters)
        except (jsonschema.ValidationError, Unresolvable) as exc:
            raise errors.tool_call_not_met() from exc
        if not isinstance(arguments, dict):
            raise errors.tool_call_not_met()
        return ToolCall(self.call_id, answer["name"], arguments)


def _string_body(text: str) -> str:
    """A JSON string's body up to its closing quote (all of `text` while it is still open)."""
    escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            return text[:index]
    return text


@dataclass
class _ArgumentsScan:
    """Finds where the arguments object ends, as its text grows: strings and nesting followed."""

    begun: int | None = None  # where the object's `{` is
    position: int = 0
    depth: int = 0
    in_string: bool = False
    escaped: bool = False
    end: int | None = None

    def feed(self, raw: str, start: int) -> int:
        """How far the arguments text goes in `raw` now."""
        if self.end is not None:
            return self.end
        self.position = max(self.position, start)
        while self.position < len(raw):
            char = raw[self.position]
            self.position += 1
            if self.begun is None:
                if not char.isspace():
                    self.begun, self.depth = self.position - 1, 1
                continue
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif char == "\\":
                    self.escaped = True
                elif char == '"':
                    self.in_string = False
            elif char == '"':
                self.in_string = True
            elif char in "{[":
                self.depth += 1
            elif char in "}]":
                self.depth -= 1
                if self.depth == 0:
                    self.end = self.position
                    return self.end
        return self.position


async def read_answers(deltas: AsyncGenerator[TextDelta, None], use: ToolUse) -> AsyncGenerator[AnswerDelta, None]:
    """The engine's deltas with each choice's JSON answer read back: text, call pieces, and on each
    choice's last delta its calls, with finish_reason `tool_calls` when a call ends it. Closing this
    closes `deltas` (so the engine request is aborted)."""
    readers: dict[int, AnswerReader] = {}
    async with aclosing(deltas):
        async for delta in deltas:
            yield _read(delta, readers.setdefault(delta.index, AnswerReader(use)))


def _read(delta: TextDelta, reader: AnswerReader) -> AnswerDelta:
    text, pieces = reader.read(delta.text)
    calls: list[ToolCall] = []
    finish_reason = delta.finish_reason
    if finish_reason is not None and finish_reason != "abort":
        whole, calls, last_pieces = reader.finish()
        if reader.kind == "text":
            text += whole[len(reader.text) :]
        pieces += last_pieces
        if calls and finish_reason == "stop":
            finish_reason = "tool_calls"
    fields = {name: getattr(delta, name) for name in TextDelta.__dataclass_fields__}
    return AnswerDelta(**{**fields, "text": text, "finish_reason": finish_reason}, pieces=pieces, calls=calls)


def arguments_text(call: ToolCall) -> str:
    """A call's arguments as the JSON text OpenAI's `function.arguments` carries."""
    return json.dumps(call.arguments, ensure_ascii=False)
