"""Server-sent event encoders: the Workers AI event sequence, OpenAI's chunks and Anthropic's events.

Every streamed token passes through here, so the bytes of an event are put together from parts built
once per stream (the OpenAI chunk's envelope, the Workers AI event's ending with its padding) around
the one part that changes, the text, encoded with orjson.
"""

from __future__ import annotations

import json
import logging
import os
import re
import string
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson

from server import errors
from server.config import StreamingConfig
from server.engine.types import TextDelta
from server.protocol import anthropic_answers, openai_answers, responses_answers, workers_ai
from server.protocol.tools import workers_ai_calls
from server.serving.tool_calls import ToolDelta

log = logging.getLogger("wai.streaming")

DONE = b"data: [DONE]\n\n"
_PADDING_ALPHABET = (string.ascii_letters + string.digits).encode()


def json_bytes(data: Any) -> bytes:
    """Compact JSON as UTF-8. orjson refuses a string that is not valid Unicode (a lone surrogate),
    which the standard encoder writes escaped."""
    try:
        return orjson.dumps(data)
    except TypeError:
        return json.dumps(data, separators=(",", ":")).encode()


def sse(data: Any) -> bytes:
    return b"data: " + json_bytes(data) + b"\n\n"


class Padding:
    """Random-length filler so that event sizes do not reveal token lengths.

    Only the length has to be secret. The lengths come from the operating system's random source,
    read 4 KiB at a time rather than once per event: a read per event showed in the per-token
    profile. The endings (`,"p":"…"}` and the event's blank line) are built once per length.
    """

    _DRAWS = 1024  # lengths per read of the random source, 4 bytes each

    def __init__(self, max_chars: int):
        self.max_chars = max_chars
        fill = _PADDING_ALPHABET * (max_chars // len(_PADDING_ALPHABET) + 1)
        self._endings = [b',"p":"' + fill[:length] + b'"}\n\n' for length in range(1, max_chars + 1)]
        self._draws: list[int] = []

    def length(self) -> int:
        if not self._draws:
            raw = os.urandom(4 * self._DRAWS)
            # 32-bit draws: the modulo's bias is below one in 10^7 for any max_chars up to 400.
            self._draws = [int.from_bytes(raw[i : i + 4], "little") % self.max_chars for i in range(0, len(raw), 4)]
        return self._draws.pop() + 1

    def ending(self) -> bytes:
        """The end of a token event: the padding field, the closing brace and the blank line."""
        return self._endings[self.length() - 1]


_paddings: dict[int, Padding] = {}


def padding_for(config: StreamingConfig) -> Padding:
    """One Padding per maximum length, shared by every stream (its draws are independent)."""
    found = _paddings.get(config.padding_max_chars)
    if found is None:
        found = _paddings[config.padding_max_chars] = Padding(config.padding_max_chars)
    return found


# A token event's padding: the last field of its object, just before the blank line that ends the event.
# In valid JSON this can only be the event's own `p` field: inside a string every quote is escaped, and
# the text of an SSE event never holds a bare newline.
_PADDED_ENDING = re.compile(rb',"p":"[A-Za-z0-9]*"\}\n\n')


def repadded(stream: bytes, config: StreamingConfig) -> bytes:
    """A kept event stream replayed with fresh padding on each token event, so that a stream served from
    the AI Gateway's cache reveals no more about its tokens than the first one did. Events without a
    `p` field (OpenAI's chunks, `[DONE]`, the usage event) come back unchanged; so does every event
    with `streaming.padding` off."""
    if not config.padding:
        return stream
    pad = padding_for(config)
    return _PADDED_ENDING.sub(lambda _: pad.ending(), stream)


async def workers_ai_events(deltas: AsyncIterator[TextDelta], config: StreamingConfig) -> AsyncIterator[bytes]:
    """Token events, then the empty event, the usage event and `[DONE]`, as the hosted service; a
    tool call is one event `{"response": "", "tool_calls": [{name, arguments}]}` before the empty one.

    `[DONE]` is sent even after an error, since clients treat a stream without it as truncated.
    """
    pad = padding_for(config) if config.padding else None
    prompt_tokens = completion_tokens = cached_tokens = 0
    try:
        async for delta in deltas:
            prompt_tokens, completion_tokens = delta.prompt_tokens, delta.completion_tokens
            cached_tokens = delta.cached_tokens
            if delta.text:
                text = json_bytes(delta.text)
                yield b'data: {"response":' + text + (pad.ending() if pad is not None else b"}\n\n")
            if isinstance(delta, ToolDelta) and delta.calls:
                # A call is sent whole once made (its arguments object parsed and checked).
                yield sse({"response": "", "tool_calls": workers_ai_calls(delta.calls)})
        yield sse({"response": ""})
        yield sse({"response": "", "usage": workers_ai.run_usage(prompt_tokens, completion_tokens, cached_tokens)})
    except errors.WaiError as error:
        yield sse({"response": "", **workers_ai.failure(error)})
    except Exception:
        log.exception("stream failed")
        yield sse({"response": "", **workers_ai.failure(errors.internal_error())})
    yield DONE


class _ChunkEnvelope:
    """The bytes of an OpenAI chunk around its choices, the same in every chunk of one stream."""

    def __init__(self, answer: openai_answers.ChatAnswer | openai_answers.CompletionAnswer):
        before, after = json_bytes(answer.chunk([])).split(b'"choices":[]', 1)
        self._head, self._tail = b"data: " + before + b'"choices":[', b"]" + after + b"\n\n"

    def around(self, choice: dict[str, Any]) -> bytes:
        return self._head + json_bytes(choice) + self._tail


async def openai_events(
    deltas: AsyncIterator[TextDelta], answer: openai_answers.ChatAnswer | openai_answers.CompletionAnswer
) -> AsyncIterator[bytes]:
    """OpenAI's chunk events, one per delta that shows something; with include_usage, a last chunk
    with no choices and the usage. Then `[DONE]`, also after an error (sent as an OpenAI error
    object, which the SDKs raise)."""
    envelope = _ChunkEnvelope(answer)
    prompt_tokens, cached_tokens, completion_tokens = 0, 0, {}
    try:
        async for delta in deltas:
            prompt_tokens, cached_tokens = delta.prompt_tokens, delta.cached_tokens
            completion_tokens[delta.index] = delta.completion_tokens
            choice = answer.chunk_choice(delta)
            if choice is not None:
                yield envelope.around(choice)
        if answer.include_usage:
            spent = openai_answers.completion_usage(prompt_tokens, sum(completion_tokens.values()), cached_tokens)
            yield sse(answer.with_timings(answer.chunk([], spent)))
    except errors.WaiError as error:
        yield sse(openai_answers.error_body(error))
    except Exception:
        log.exception("stream failed")
        yield sse(openai_answers.error_body(errors.internal_error()))
    yield DONE


def named_event(name: str, data: Any) -> bytes:
    """An event with its name, as Anthropic's stream sends each one."""
    return b"event: " + name.encode() + b"\ndata: " + json_bytes(data) + b"\n\n"


async def anthropic_events(
    deltas: AsyncIterator[TextDelta], answer: anthropic_answers.MessageAnswer
) -> AsyncIterator[bytes]:
    """Anthropic's typed events (protocol/anthropic_answers.py); an error is an `error` event, which
    the anthropic SDK raises. No `[DONE]`: `message_stop` ends the stream."""
    try:
        async for delta in deltas:
            for name, data in answer.after(delta):
                yield named_event(name, data)
        for name, data in answer.finish():
            yield named_event(name, data)
    except errors.WaiError as error:
        yield named_event("error", anthropic_answers.error_body(error))
    except Exception:
        log.exception("stream failed")
        yield named_event("error", anthropic_answers.error_body(errors.internal_error()))


async def responses_events(
    deltas: AsyncIterator[TextDelta],
    answer: responses_answers.ResponseAnswer,
    keep: Callable[[dict[str, Any]], Awaitable[None]],
) -> AsyncIterator[bytes]:
    """The Responses API's typed events (protocol/responses_answers.py); the response as it ended goes
    to `keep` (the store) before its last event. An error is an `error` event, which the SDK raises."""
    try:
        async for delta in deltas:
            for name, data in answer.after(delta):
                yield named_event(name, data)
        events, whole = answer.finish()
        await keep(whole)
        for name, data in events:
            yield named_event(name, data)
    except errors.WaiError as error:
        yield named_event("error", responses_answers.error_event(error, answer.sequence))
    except Exception:
        log.exception("stream failed")
        yield named_event("error", responses_answers.error_event(errors.internal_error(), answer.sequence))
