"""OpenAI's answers: chat completions and completions, whole and as chunks.

Also OpenAI's usage, logprobs, errors, embeddings and model list; the requests are openai.py's.
"""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from server import errors
from server.engine.types import TextDelta
from server.protocol.catalog import Entry
from server.protocol.tools import openai_call_deltas, openai_calls
from server.serving.text import Choice, Completion
from server.serving.tool_calls import ToolDelta

STARTED = int(time.time())  # the models' `created`: when this server loaded them


def now() -> int:
    return int(time.time())


def completion_usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict[str, Any]:
    """OpenAI's `usage` (its CompletionUsage): the counts and the prompt tokens read from the cache."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def logprobs_content(positions: list[dict[str, Any]], top_logprobs: int) -> list[dict[str, Any]]:
    """The engine's per-token logprobs in chat's shape, with the UTF-8 bytes of each token."""
    return [
        {
            **_token(position["token"], position["logprob"]),
            "top_logprobs": [_token(top["token"], top["logprob"]) for top in position["top"][:top_logprobs]],
        }
        for position in positions
    ]


def _token(text: str, logprob: float) -> dict[str, Any]:
    return {"token": text, "logprob": logprob, "bytes": list(text.encode())}


def completion_logprobs(positions: list[dict[str, Any]], top_logprobs: int, offset: int) -> dict[str, Any]:
    """The legacy completions shape: parallel lists, and each token's character offset in the text
    generated for that choice, counted from `offset` (what came before in a stream)."""
    offsets = []
    for position in positions:
        offsets.append(offset)
        offset += len(position["token"])
    return {
        "tokens": [position["token"] for position in positions],
        "token_logprobs": [position["logprob"] for position in positions],
        "top_logprobs": [
            {top["token"]: top["logprob"] for top in position["top"][:top_logprobs]} for position in positions
        ],
        "text_offset": offsets,
    }


@dataclass
class _TextAnswer:
    """What every OpenAI text answer carries; subclasses write the choices."""

    object: ClassVar[str]
    chunk_object: ClassVar[str]

    id: str
    created: int
    model: str  # as the client named it
    top_logprobs: int | None = None
    include_usage: bool = False
    # The request's own timings (`metrics.per_request`): a `metrics` object on the whole answer and on
    # the stream's usage chunk; none: OpenAI's shape exactly.
    timings: Callable[[], dict[str, Any]] | None = None

    def whole(self, completion: Completion) -> dict[str, Any]:
        body = {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "choices": [self.whole_choice(choice) for choice in completion.choices],
            "usage": completion_usage(completion.prompt_tokens, completion.completion_tokens, completion.cached_tokens),
        }
        return self.with_timings(body)

    def with_timings(self, body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "metrics": self.timings()} if self.timings is not None else body

    def chunk(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> dict[str, Any]:
        """One stream chunk; with include_usage every chunk carries `usage` (null until the last)."""
        body = {
            "id": self.id,
            "object": self.chunk_object,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.include_usage:
            body["usage"] = usage
        return body

    def whole_choice(self, choice: Choice) -> dict[str, Any]:
        raise NotImplementedError

    def chunk_choice(self, delta: TextDelta) -> dict[str, Any] | None:
        """The choice a delta adds to the stream; None when it adds nothing a client would see."""
        raise NotImplementedError


@dataclass
class ChatAnswer(_TextAnswer):
    """`chat.completion`, and `chat.completion.chunk` events: the role first, then content, each
    choice ending with its finish_reason."""

    object: ClassVar[str] = "chat.completion"
    chunk_object: ClassVar[str] = "chat.completion.chunk"
    _started: set[int] = field(default_factory=set)

    def _logprobs(self, positions: list[dict[str, Any]]) -> dict[str, Any] | None:
        if self.top_logprobs is None:
            return None
        return {"content": logprobs_content(positions, self.top_logprobs)}

    def whole_choice(self, choice: Choice) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": choice.text}
        if choice.tool_calls:
            message.update(content=None, tool_calls=openai_calls(choice.tool_calls))
        return {
            "index": choice.index,
            "message": message,
            "logprobs": self._logprobs(choice.logprobs),
            "finish_reason": choice.finish_reason or "stop",
        }

    def chunk_choice(self, delta: TextDelta) -> dict[str, Any] | None:
        message: dict[str, Any] = {}
        if delta.index not in self._started:
            self._started.add(delta.index)
            message["role"] = "assistant"
        if delta.text or "role" in message:
            message["content"] = delta.text
        if isinstance(delta, ToolDelta) and delta.pieces:
            message["tool_calls"] = openai_call_deltas(delta.pieces)
        logprobs = self._logprobs(delta.logprobs)
        if not (message or delta.finish_reason or (logprobs and logprobs["content"])):
            return None
        return {"index": delta.index, "delta": message, "logprobs": logprobs, "finish_reason": delta.finish_reason}


@dataclass
class CompletionAnswer(_TextAnswer):
    """`text_completion`, whole or streamed: each chunk carries its choice's new text."""

    object: ClassVar[str] = "text_completion"
    chunk_object: ClassVar[str] = "text_completion"
    _offsets: dict[int, int] = field(default_factory=dict)  # characters streamed so far, per choice

    def _logprobs(self, index: int, positions: list[dict[str, Any]]) -> dict[str, Any] | None:
        if self.top_logprobs is None:
            return None
        offset = self._offsets.get(index, 0)
        self._offsets[index] = offset + sum(len(position["token"]) for position in positions)
        return completion_logprobs(positions, self.top_logprobs, offset)

    def whole_choice(self, choice: Choice) -> dict[str, Any]:
        return {
            "index": choice.index,
            "text": choice.text,
            "logprobs": self._logprobs(choice.index, choice.logprobs),
            "finish_reason": choice.finish_reason or "stop",
        }

    def chunk_choice(self, delta: TextDelta) -> dict[str, Any] | None:
        if not (delta.text or delta.finish_reason or delta.logprobs):
            return None
        return {
            "index": delta.index,
            "text": delta.text,
            "logprobs": self._logprobs(delta.index, delta.logprobs),
            "finish_reason": delta.finish_reason,
        }


def error_body(error: errors.WaiError) -> dict[str, Any]:
    """OpenAI's error object: its own code and words where its API has them (server/errors.py)."""
    return {
        "error": {
            "message": error.openai_message or error.message,
            "type": error.openai_type,
            "param": error.param,
            "code": error.openai_code or str(error.code),
        }
    }


def error_status(error: errors.WaiError) -> int:
    return error.openai_status or error.status


def embedding_list(vectors: list[list[float]], encoding_format: str, model: str, prompt_tokens: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": index, "embedding": _encoded(vector, encoding_format)}
            for index, vector in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def _encoded(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        # Little-endian float32, as OpenAI sends it and its SDK decodes it.
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


def model_list(entries: list[Entry], created: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": entry.name, "object": "model", "created": created, "owned_by": entry.author or "wai"}
            for entry in entries
        ],
    }
