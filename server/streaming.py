"""Server-sent event encoders: the Workers AI event sequence and OpenAI's chunk sequence."""

from __future__ import annotations

import json
import logging
import secrets
import string
from collections.abc import AsyncIterator
from typing import Any

from server import errors
from server.config import StreamingConfig
from server.engine.types import TextDelta
from server.protocol import openai, workers_ai
from server.protocol.tools import workers_ai_calls
from server.serving.tools import AnswerDelta

log = logging.getLogger("wai.streaming")

_PADDING_ALPHABET = string.ascii_letters + string.digits
DONE = b"data: [DONE]\n\n"


def sse(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def padding(config: StreamingConfig) -> str:
    """Random-length filler so that event sizes do not reveal token lengths.

    Only the length has to be secret, so one random draw per event: drawing every character cost
    about 8x more and showed in the stream's per-token profile.
    """
    length = secrets.randbelow(config.padding_max_chars) + 1
    return (_PADDING_ALPHABET * (length // len(_PADDING_ALPHABET) + 1))[:length]


async def workers_ai_events(deltas: AsyncIterator[TextDelta], config: StreamingConfig) -> AsyncIterator[bytes]:
    """Token events, then the empty event, the usage event and `[DONE]`, as the hosted service; a
    tool call is one event `{"response": "", "tool_calls": [{name, arguments}]}` before the empty one.

    `[DONE]` is sent even after an error, since clients treat a stream without it as truncated.
    """
    prompt_tokens = completion_tokens = 0
    try:
        async for delta in deltas:
            prompt_tokens, completion_tokens = delta.prompt_tokens, delta.completion_tokens
            if delta.text:
                event: dict[str, Any] = {"response": delta.text}
                if config.padding:
                    event["p"] = padding(config)
                yield sse(event)
            if isinstance(delta, AnswerDelta) and delta.calls:
                # A call is sent whole once made (its arguments object parsed and checked).
                yield sse({"response": "", "tool_calls": workers_ai_calls(delta.calls)})
        yield sse({"response": ""})
        yield sse({"response": "", "usage": workers_ai.usage(prompt_tokens, completion_tokens)})
    except errors.WaiError as error:
        yield sse({"response": "", **workers_ai.failure(error)})
    except Exception:
        log.exception("stream failed")
        yield sse({"response": "", **workers_ai.failure(errors.internal_error())})
    yield DONE


async def openai_events(
    deltas: AsyncIterator[TextDelta], answer: openai.ChatFormat | openai.CompletionFormat
) -> AsyncIterator[bytes]:
    """OpenAI's chunk events, one per delta that shows something; with include_usage, a last chunk
    with no choices and the usage. Then `[DONE]`, also after an error (sent as an OpenAI error
    object, which the SDKs raise)."""
    prompt_tokens, cached_tokens, completion_tokens = 0, 0, {}
    try:
        async for delta in deltas:
            prompt_tokens, cached_tokens = delta.prompt_tokens, delta.cached_tokens
            completion_tokens[delta.index] = delta.completion_tokens
            choice = answer.chunk_choice(delta)
            if choice is not None:
                yield sse(answer.chunk([choice]))
        if answer.include_usage:
            yield sse(answer.chunk([], openai.usage(prompt_tokens, sum(completion_tokens.values()), cached_tokens)))
    except errors.WaiError as error:
        yield sse(openai.error_body(error))
    except Exception:
        log.exception("stream failed")
        yield sse(openai.error_body(errors.internal_error()))
    yield DONE
