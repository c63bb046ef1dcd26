"""A stream replayed from the AI Gateway's cache gets fresh padding: the same events, new `p` fields."""

import asyncio
import json

from server.config import StreamingConfig
from server.engine.types import TextDelta
from server.protocol import openai_answers
from server.streaming import openai_events, repadded, workers_ai_events

PADDED = StreamingConfig(padding=True)
# Texts that look like padding, or end like an event, once inside the JSON string.
TEXTS = ['x,"p":"abc"}', "two\n\nlines", "ends in \\", '"}\n\n', "naïve 🍕", "plain"] * 40


def stream(texts: list[str], config: StreamingConfig = PADDED) -> bytes:
    async def deltas():
        for n, text in enumerate(texts):
            yield TextDelta(0, text, 5, n + 1)

    async def events() -> bytes:
        return b"".join([event async for event in workers_ai_events(deltas(), config)])

    return asyncio.run(events())


def events_of(body: bytes) -> list[bytes]:
    assert body.endswith(b"\n\n")
    return body.removesuffix(b"\n\n").split(b"\n\n")


def without_padding(body: bytes) -> list[object]:
    """Each event as data, the padding taken out of those that have it."""
    decoded: list[object] = []
    for event in events_of(body):
        data = event.removeprefix(b"data: ")
        if data == b"[DONE]":
            decoded.append("[DONE]")
            continue
        fields = json.loads(data)
        fields.pop("p", None)
        decoded.append(fields)
    return decoded


def paddings(body: bytes) -> list[str]:
    return [json.loads(event.removeprefix(b"data: ")).get("p") for event in events_of(body)[:-1]]


def test_the_same_events_come_back_with_fresh_padding():
    kept = stream(TEXTS)
    again = repadded(kept, PADDED)
    assert without_padding(again) == without_padding(kept)
    assert [event["response"] for event in without_padding(again)[: len(TEXTS)]] == TEXTS  # type: ignore[index]
    # Every token event still has its padding, in range, as its last field; the others have none.
    pads = paddings(again)
    assert all(pad is not None and 1 <= len(pad) <= 32 and pad.isalnum() for pad in pads[: len(TEXTS)])
    assert pads[len(TEXTS) :] == [None, None]  # the empty event and the usage event
    assert events_of(again)[-1] == b"data: [DONE]"
    # 240 lengths drawn again: the chance that all match the first ones is 32^-240.
    assert [len(pad or "") for pad in pads] != [len(pad or "") for pad in paddings(kept)]


def test_each_replay_draws_new_lengths():
    kept = stream(TEXTS)
    replays = [repadded(kept, PADDED) for _ in range(3)]
    assert len({kept, *replays}) == 4


def test_the_configured_maximum_bounds_the_new_padding():
    again = repadded(stream(TEXTS), StreamingConfig(padding=True, padding_max_chars=3))
    assert {len(pad) for pad in paddings(again)[: len(TEXTS)] if pad} == {1, 2, 3}


def test_with_padding_off_the_stream_is_unchanged():
    kept = stream(TEXTS)
    assert repadded(kept, StreamingConfig(padding=False)) == kept


def test_a_stream_without_padding_is_unchanged():
    kept = stream(TEXTS, StreamingConfig(padding=False))
    assert repadded(kept, PADDED) == kept


def test_openai_chunks_are_unchanged():
    async def deltas():
        for n, text in enumerate(TEXTS):
            yield TextDelta(0, text, 5, n + 1)

    async def events() -> bytes:
        answer = openai_answers.ChatAnswer(id="chatcmpl-1", created=1700000000, model="m", include_usage=True)
        return b"".join([event async for event in openai_events(deltas(), answer)])

    kept = asyncio.run(events())
    assert repadded(kept, PADDED) == kept
