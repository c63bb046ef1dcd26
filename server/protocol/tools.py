"""Tool calls on the wire: Workers AI's flat calls and OpenAI's, whole and streamed.

The calls themselves are read from the model's answer by serving/tools.py; this module only writes them.
"""

from __future__ import annotations

from typing import Any

from server.serving.tools import CallPiece, ToolCall, arguments_text


def workers_ai_calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    """Workers AI's `tool_calls`: `[{name, arguments}]`, the arguments an object."""
    return [{"name": call.name, "arguments": call.arguments} for call in calls]


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
