import asyncio
import json

import pytest

from server import errors
from server.config import StreamingConfig
from server.engine.types import TextDelta
from server.protocol import openai_answers
from server.streaming import openai_events, workers_ai_events


async def collect(deltas, config=StreamingConfig()):
    async def gen():
        for d in deltas:
            if isinstance(d, Exception):
                raise d
            yield d

    return [chunk async for chunk in workers_ai_events(gen(), config)]


def test_event_sequence_without_padding():
    deltas = [TextDelta(0, "Hel", 5, 1), TextDelta(0, "lo", 5, 2, finish_reason="stop")]
    chunks = asyncio.run(collect(deltas, StreamingConfig(padding=False)))
    assert b"".join(chunks) == (
        b'data: {"response":"Hel"}\n\n'
        b'data: {"response":"lo"}\n\n'
        b'data: {"response":""}\n\n'
        b'data: {"response":"","usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7,'
        b'"prompt_tokens_details":{"cached_tokens":0}}}\n\n'
        b"data: [DONE]\n\n"
    )


def test_an_error_mid_stream_still_ends_with_done():
    chunks = asyncio.run(collect([TextDelta(0, "a", 1, 1), errors.service_unavailable()]))
    assert chunks[-1] == b"data: [DONE]\n\n"
    event = json.loads(chunks[-2][len(b"data: ") :])
    assert event["errors"][0]["code"] == 3040 and event["success"] is False


TEXTS = ["Hel", 'quote " and \\ backslash', "tab\tnew\nline", "naïve café 🍕", "\x00\x1f control", "\ud800 lone"]


def test_token_events_are_the_json_the_standard_encoder_writes():
    deltas = [TextDelta(0, text, 5, n + 1) for n, text in enumerate(TEXTS)]
    chunks = asyncio.run(collect(deltas, StreamingConfig(padding=True)))
    token_events = [json.loads(chunk.removeprefix(b"data: ")) for chunk in chunks[: len(TEXTS)]]
    assert [event["response"] for event in token_events] == TEXTS
    assert all(list(event) == ["response", "p"] and 1 <= len(event["p"]) <= 32 for event in token_events)
    assert all(chunk.endswith(b"}\n\n") and chunk.count(b"\n") == 2 for chunk in chunks[: len(TEXTS)])


@pytest.mark.parametrize("answer_type", [openai_answers.ChatAnswer, openai_answers.CompletionAnswer])
@pytest.mark.parametrize("include_usage", [False, True])
def test_openai_chunks_put_together_from_parts_equal_whole_chunks(answer_type, include_usage):
    """Each chunk's envelope is built once per stream; the chunks decode to what encoding each one
    whole gives, keys in the same order."""
    deltas = [TextDelta(0, text, 5, n + 1) for n, text in enumerate(TEXTS)]
    deltas[-1] = TextDelta(0, TEXTS[-1], 5, len(TEXTS), finish_reason="length")

    async def run(answer):
        async def gen():
            for delta in deltas:
                yield delta

        return [chunk async for chunk in openai_events(gen(), answer)]

    def fresh():
        return answer_type(id="cmpl-1", created=1700000000, model="m", include_usage=include_usage)

    chunks = asyncio.run(run(fresh()))
    reference = fresh()
    expected = [reference.chunk([reference.chunk_choice(delta)]) for delta in deltas]
    got = [json.loads(chunk.removeprefix(b"data: ")) for chunk in chunks[: len(deltas)]]
    assert got == expected
    assert [list(event) for event in got] == [list(event) for event in expected]
