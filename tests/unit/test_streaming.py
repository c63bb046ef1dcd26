import asyncio
import json

from server import errors
from server.config import StreamingConfig
from server.engine.types import TextDelta
from server.streaming import workers_ai_events


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
        b'data: {"response":"","usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}\n\n'
        b"data: [DONE]\n\n"
    )


def test_an_error_mid_stream_still_ends_with_done():
    chunks = asyncio.run(collect([TextDelta(0, "a", 1, 1), errors.service_unavailable()]))
    assert chunks[-1] == b"data: [DONE]\n\n"
    event = json.loads(chunks[-2][len(b"data: ") :])
    assert event["errors"][0]["code"] == 3040 and event["success"] is False
