"""Anthropic's Messages answers: a whole `message`, the stream's typed events, usage and errors.

The stream, as the anthropic SDK parses it: `message_start` (the message without content, its input
tokens), then per content block `content_block_start`, `content_block_delta` (`text_delta`, or
`input_json_delta` for a tool call's input as it is written) and `content_block_stop`, then
`message_delta` (the stop reason and the whole usage, as Anthropic's API now sends it) and
`message_stop`. An error mid-stream is an `error` event. The requests are anthropic.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server import errors
from server.engine.types import TextDelta
from server.protocol.tools import anthropic_tool_uses
from server.serving.text import Completion
from server.serving.tool_calls import ToolDelta

# The engine's finish reasons in Anthropic's words.
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}

# Anthropic's error types by HTTP status (its API's "Errors" page); others by their class.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    431: "request_too_large",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}

Event = tuple[str, dict[str, Any]]  # an SSE event's name and its data


def usage(prompt_tokens: int, output_tokens: int, cached_tokens: int = 0) -> dict[str, Any]:
    """Anthropic's usage: the prompt tokens read from the cache are counted apart from the others."""
    return {
        "input_tokens": prompt_tokens - cached_tokens,
        "output_tokens": output_tokens,
        "cache_read_input_tokens": cached_tokens,
        "cache_creation_input_tokens": 0,
    }


def stop_reason(finish_reason: str | None) -> str:
    return STOP_REASONS.get(finish_reason or "stop", "end_turn")


def error_body(error: errors.WaiError, status: int | None = None) -> dict[str, Any]:
    """Anthropic's error object, its type told by the HTTP status the error is answered with."""
    status = status or error.status
    kind = ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}


@dataclass
class MessageAnswer:
    """A `message` from the model named as the client named it, whole or as events."""

    id: str
    model: str
    _block: int = -1  # the content block being streamed
    _block_kind: str | None = None  # "text" or "tool_use" while a block is open
    _finish: str | None = None
    _prompt_tokens: int = 0
    _cached_tokens: int = 0
    _output_tokens: int = 0
    _started: bool = False

    def message(self, content: list[dict[str, Any]], stop: str | None, usage: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }

    def whole(self, completion: Completion) -> dict[str, Any]:
        (choice,) = completion.choices
        content = ([{"type": "text", "text": choice.text}] if choice.text or not choice.tool_calls else []) + (
            anthropic_tool_uses(choice.tool_calls)
        )
        spent = usage(completion.prompt_tokens, completion.completion_tokens, completion.cached_tokens)
        return self.message(content, stop_reason(choice.finish_reason), spent)

    # --- the stream -------------------------------------------------------------------------------

    def after(self, delta: TextDelta) -> list[Event]:
        """The events one delta adds."""
        events: list[Event] = []
        if not self._started:
            self._started = True
            begun = usage(delta.prompt_tokens, 0, delta.cached_tokens)
            events.append(("message_start", {"type": "message_start", "message": self.message([], None, begun)}))
        if delta.text:
            events += self._open("text", {"type": "text", "text": ""})
            events.append(self._delta({"type": "text_delta", "text": delta.text}))
        for piece in delta.pieces if isinstance(delta, ToolDelta) else []:
            if piece.name is not None:  # a call begins
                self._close(events)
                events += self._open("tool_use", {"type": "tool_use", "id": piece.id, "name": piece.name, "input": {}})
            if piece.arguments:
                events.append(self._delta({"type": "input_json_delta", "partial_json": piece.arguments}))
        self._prompt_tokens, self._cached_tokens = delta.prompt_tokens, delta.cached_tokens
        self._output_tokens = delta.completion_tokens
        self._finish = delta.finish_reason or self._finish
        return events

    def finish(self) -> list[Event]:
        """The events that end the message."""
        events: list[Event] = []
        if not self._started:  # the engine gave no delta at all
            events += self.after(TextDelta(index=0, text="", prompt_tokens=0, completion_tokens=0))
        if self._block < 0:  # an empty answer still has its one text block
            events += self._open("text", {"type": "text", "text": ""})
        self._close(events)
        stop = {"stop_reason": stop_reason(self._finish), "stop_sequence": None}
        spent = usage(self._prompt_tokens, self._output_tokens, self._cached_tokens)
        events.append(("message_delta", {"type": "message_delta", "delta": stop, "usage": spent}))
        events.append(("message_stop", {"type": "message_stop"}))
        return events

    def _open(self, kind: str, block: dict[str, Any]) -> list[Event]:
        if self._block_kind == kind and kind == "text":
            return []
        events: list[Event] = []
        self._close(events)
        self._block += 1
        self._block_kind = kind
        events.append(
            ("content_block_start", {"type": "content_block_start", "index": self._block, "content_block": block})
        )
        return events

    def _close(self, events: list[Event]) -> None:
        if self._block_kind is not None:
            events.append(("content_block_stop", {"type": "content_block_stop", "index": self._block}))
            self._block_kind = None

    def _delta(self, delta: dict[str, Any]) -> Event:
        return "content_block_delta", {"type": "content_block_delta", "index": self._block, "delta": delta}
