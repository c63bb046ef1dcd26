"""The model's output for a request with tools, read back as it streams: text, or a call.

The output is one JSON object (serving/tool_prompt.py): `{"content": ...}` is read as text as it
comes, `{"name": ..., "parameters": ...}` as a call whose name is known as soon as it is written and
whose arguments stream as text pieces; the whole call is checked against its tool at the end.
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
from server.serving.requests import ToolCall, ToolUse

_ID_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class CallPiece:
    """Part of a call as it streams: the first piece has the id and name, the rest arguments text;
    all the `arguments` pieces of a call, joined, are its arguments as JSON text."""

    index: int
    arguments: str
    id: str | None = None
    name: str | None = None


@dataclass
class ToolDelta(TextDelta):
    """A delta of an output decoded with tools: `text` is output text only; `pieces` stream a call;
    `calls` are the complete calls, on the choice's last delta."""

    pieces: list[CallPiece] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)


def new_call_id() -> str:
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


_CALL_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"([A-Za-z0-9_-]{1,64})"\s*,\s*"parameters"\s*:\s*')
_TEXT_HEAD = re.compile(r'\s*\{\s*"content"\s*:\s*"')
# The end of a string body that cannot be decoded yet: a lone backslash, a \u escape still being
# written, or a high surrogate whose low half has not come.
_UNFINISHED_ESCAPE = re.compile(r"(?<!\\)(\\\\)*(\\|\\u[0-9A-Fa-f]{0,3}|\\u[dD][89abAB][0-9A-Fa-f]{2})$")


class CallReader:
    """One choice's JSON output read as it grows: the text of `{"content": ...}` as it comes, a
    call's name as soon as it is written and its arguments text as it is written."""

    def __init__(self, use: ToolUse):
        self.use = use
        self.raw = ""
        self.kind: Literal["call", "text"] | None = None
        self.name = ""  # the tool called, once written
        self.text = ""  # the output text decoded so far
        self.call_id = new_call_id()
        self.call_started = False
        self._start = 0  # where the arguments or the text body start in `raw`
        self._sent = 0  # arguments characters streamed so far (from `_start`)
        self._decoded = 0  # text body characters decoded so far (from `_start`), always whole escapes
        self._scan = _ArgumentsScan()

    def read(self, text: str) -> tuple[str, list[CallPiece]]:
        """New output text and call pieces once `text` is added."""
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
        """The whole output: its text, or its call (and the call's pieces if none streamed yet).
        A call cut short (max_tokens ran out) or not matching its schema is an error, never sent."""
        try:
            output = json.loads(self.raw)
        except json.JSONDecodeError:
            if self.kind == "text":
                return self.text, [], []  # text cut by max_tokens: what there is, as for any output
            raise errors.tool_call_not_met() from None
        if isinstance(output, dict) and isinstance(output.get("content"), str) and self.use.mode == "auto":
            return output["content"], [], []
        call = self._call(output)
        pieces = [] if self.call_started else [CallPiece(0, json.dumps(call.arguments), id=call.id, name=call.name)]
        return "", [call], pieces

    def _call(self, output: Any) -> ToolCall:
        if not isinstance(output, dict) or output.get("name") not in {tool.name for tool in self.use.callable}:
            raise errors.tool_call_not_met()
        arguments = output.get("parameters")
        try:
            jsonschema.validate(arguments, self.use.tool(output["name"]).parameters)
        except (jsonschema.ValidationError, Unresolvable) as exc:
            raise errors.tool_call_not_met() from exc
        if not isinstance(arguments, dict):
            raise errors.tool_call_not_met()
        return ToolCall(self.call_id, output["name"], arguments)


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


async def read_calls(deltas: AsyncGenerator[TextDelta, None], use: ToolUse) -> AsyncGenerator[ToolDelta, None]:
    """The engine's deltas with each choice's JSON output read back: text, call pieces, and on each
    choice's last delta its calls, with finish_reason `tool_calls` when a call ends it. Closing this
    closes `deltas` (so the engine request is aborted)."""
    readers: dict[int, CallReader] = {}
    async with aclosing(deltas):
        async for delta in deltas:
            yield _read(delta, readers.setdefault(delta.index, CallReader(use)))


def _read(delta: TextDelta, reader: CallReader) -> ToolDelta:
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
    return ToolDelta(**{**fields, "text": text, "finish_reason": finish_reason}, pieces=pieces, calls=calls)
