"""OpenAI's Responses answers: the `response` object, whole and as the stream's typed events.

The stream, as the openai SDK parses it (each event `event: <type>` with a `sequence_number`):
`response.created`, `response.in_progress`; per output item `response.output_item.added`, then for a
message `response.content_part.added`, `response.output_text.delta`s, `response.output_text.done`,
`response.content_part.done`, or for a function call `response.function_call_arguments.delta`s and
`.done`; `response.output_item.done`; and last `response.completed` with the whole response, its
`status` `incomplete` when `max_output_tokens` cut it (as vLLM sends it: the SDK's stream helper waits
for `response.completed`). An error mid-stream is an `error` event.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from server import errors
from server.engine.types import TextDelta
from server.protocol.tools import arguments_text
from server.serving.requests import ToolCall
from server.serving.text import Completion
from server.serving.tool_calls import ToolDelta

Event = tuple[str, dict[str, Any]]


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


def usage(prompt_tokens: int, output_tokens: int, cached_tokens: int = 0) -> dict[str, Any]:
    return {
        "input_tokens": prompt_tokens,
        "input_tokens_details": {"cached_tokens": cached_tokens},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt_tokens + output_tokens,
    }


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def call_item(
    item_id: str, call: ToolCall | None, call_id: str, name: str, status: str = "completed"
) -> dict[str, Any]:
    arguments = arguments_text(call) if call is not None else ""
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


@dataclass
class ResponseAnswer:
    """A `response`: its settings as the client gave them (`echo`), its output, usage and status."""

    id: str
    model: str
    echo: dict[str, Any]  # instructions, max_output_tokens, temperature, top_p, tools, tool_choice, text, ...
    created_at: int = field(default_factory=lambda: int(time.time()))
    _sequence: int = 0
    _items: list[dict[str, Any]] = field(default_factory=list)
    _text_item: dict[str, Any] | None = None  # the message being streamed
    _call_item: dict[str, Any] | None = None  # the function call being streamed
    _prompt_tokens: int = 0
    _cached_tokens: int = 0
    _output_tokens: int = 0
    _finish: str | None = None
    _started: bool = False

    def response(self, status: str, output: list[dict[str, Any]], spent: dict[str, Any] | None) -> dict[str, Any]:
        incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": None,
            "incomplete_details": incomplete,
            "model": self.model,
            "output": output,
            "usage": spent,
            **self.echo,
        }

    def whole(self, completion: Completion) -> dict[str, Any]:
        (choice,) = completion.choices
        output = [call_item(new_id("fc"), call, call.id, call.name) for call in choice.tool_calls] or [
            message_item(new_id("msg"), choice.text)
        ]
        spent = usage(completion.prompt_tokens, completion.completion_tokens, completion.cached_tokens)
        return self.response(_status(choice.finish_reason, bool(choice.tool_calls)), output, spent)

    # --- the stream -------------------------------------------------------------------------------

    def after(self, delta: TextDelta) -> list[Event]:
        events: list[Event] = []
        if not self._started:
            self._started = True
            begun = self.response("in_progress", [], None)
            events += [
                self._event("response.created", response=begun),
                self._event("response.in_progress", response=begun),
            ]
        if delta.text:
            if self._text_item is None:
                events += self._end_call()
                self._text_item = message_item(new_id("msg"), "", "in_progress")
                events += self._add(self._text_item)
                part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                events.append(
                    self._event("response.content_part.added", **self._at(self._text_item), content_index=0, part=part)
                )
            self._text_item["content"][0]["text"] += delta.text
            events.append(
                self._event(
                    "response.output_text.delta",
                    **self._at(self._text_item),
                    content_index=0,
                    delta=delta.text,
                    logprobs=[],
                )
            )
        for piece in delta.pieces if isinstance(delta, ToolDelta) else []:
            if piece.name is not None:
                events += self._end_text() + self._end_call()
                self._call_item = call_item(new_id("fc"), None, piece.id or "", piece.name, "in_progress")
                events += self._add(self._call_item)
            if piece.arguments and self._call_item is not None:
                self._call_item["arguments"] += piece.arguments
                events.append(
                    self._event(
                        "response.function_call_arguments.delta", **self._at(self._call_item), delta=piece.arguments
                    )
                )
        self._prompt_tokens, self._cached_tokens = delta.prompt_tokens, delta.cached_tokens
        self._output_tokens = delta.completion_tokens
        self._finish = delta.finish_reason or self._finish
        return events

    def finish(self) -> tuple[list[Event], dict[str, Any]]:
        """The events that end the response, and the response as it ended (for `store`)."""
        events: list[Event] = []
        if not self._started:
            events += self.after(TextDelta(index=0, text="", prompt_tokens=0, completion_tokens=0))
        called = any(item["type"] == "function_call" for item in self._items)
        if not self._items:
            self._text_item = message_item(new_id("msg"), "", "in_progress")
            events += self._add(self._text_item)
        events += self._end_text() + self._end_call()
        status = _status(self._finish, called)
        whole = self.response(status, self._items, usage(self._prompt_tokens, self._output_tokens, self._cached_tokens))
        events.append(self._event("response.completed", response=whole))
        return events, whole

    @property
    def sequence(self) -> int:
        """The next event's sequence number."""
        return self._sequence

    def _event(self, kind: str, **data: Any) -> Event:
        event = (kind, {"type": kind, "sequence_number": self._sequence, **data})
        self._sequence += 1
        return event

    def _at(self, item: dict[str, Any]) -> dict[str, Any]:
        return {"item_id": item["id"], "output_index": self._items.index(item)}

    def _add(self, item: dict[str, Any]) -> list[Event]:
        self._items.append(item)
        return [self._event("response.output_item.added", output_index=len(self._items) - 1, item=dict(item))]

    def _end_text(self) -> list[Event]:
        item, self._text_item = self._text_item, None
        if item is None:
            return []
        item["status"] = "completed"
        part = item["content"][0]
        at = self._at(item)
        return [
            self._event("response.output_text.done", **at, content_index=0, text=part["text"], logprobs=[]),
            self._event("response.content_part.done", **at, content_index=0, part=part),
            self._event("response.output_item.done", output_index=at["output_index"], item=item),
        ]

    def _end_call(self) -> list[Event]:
        item, self._call_item = self._call_item, None
        if item is None:
            return []
        item["status"] = "completed"
        at = self._at(item)
        return [
            self._event("response.function_call_arguments.done", **at, name=item["name"], arguments=item["arguments"]),
            self._event("response.output_item.done", output_index=at["output_index"], item=item),
        ]


def _status(finish_reason: str | None, called: bool) -> str:
    return "incomplete" if finish_reason == "length" and not called else "completed"


def error_event(error: errors.WaiError, sequence_number: int) -> dict[str, Any]:
    code = error.openai_code or str(error.code)
    return {
        "type": "error",
        "sequence_number": sequence_number,
        "code": code,
        "message": error.message,
        "param": error.param,
    }
