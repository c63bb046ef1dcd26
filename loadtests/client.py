"""One streamed request, timed event by event: what every measurement is built from."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from loadtests.prompts import Prompt
from loadtests.protocols import PROTOCOLS, Event, Protocol, Sampling, Target

# Light reading decodes only the events that can say something other than "one more output event":
# the first, the last two before [DONE] (the usage, and the empty or finishing event before it), and
# any that names an error. A JSON string cannot hold a bare quote, so `"error` only matches a key.
LIGHT_TAIL = 2
ERROR_KEY = b'"error'


@dataclass
class RequestRecord:
    """The timings and outcome of one request. Times are seconds; `start` is from the run's start."""

    target: str
    level: float
    prompt_id: str
    start: float
    ok: bool = False
    cancelled: bool = False  # the client dropped the connection on purpose (--cancel-rate): not an error
    cancel_after: int | None = None  # the output events after which it was to drop it (None: never)
    status: int = 0
    error_code: str | None = None
    error: str | None = None
    ttft: float | None = None  # time to the first event that carried output
    itl: list[float] = field(default_factory=list)  # gaps between successive output events
    last_token: float | None = None  # time to the last event that carried output
    e2e: float | None = None  # time to the end of the stream
    prompt_tokens: int | None = None
    output_tokens: int | None = None  # from the stream's `usage`
    usage_missing: bool = False

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first: (last token - first token) / (tokens - 1)."""
        if self.ttft is None or self.last_token is None or not self.output_tokens or self.output_tokens < 2:
            return None
        return (self.last_token - self.ttft) / (self.output_tokens - 1)

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "tpot": self.tpot}


def http_client(concurrency: int, timeout: float) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(timeout, connect=10.0))


async def send(
    client: httpx.AsyncClient,
    target: Target,
    prompt: Prompt,
    sampling: Sampling,
    level: float,
    run_start: float,
    cancel_after: int | None = None,
    light: bool = False,
) -> RequestRecord:
    """Send one streamed chat request and record when each piece of it arrived. Never raises on
    a failed request: a refused connection, an error status or an error event is recorded.

    With `cancel_after` N the client drops the connection once N output events have arrived (0:
    right after a 200's headers), as a user who closes the tab; the request is recorded as cancelled,
    not failed. An error before that point is still an error, and a stream that ends before it
    (a reply shorter than N tokens) is an ordinary completed request.

    `light` counts the output events without JSON-decoding each one (`light_events`), so that the
    load generator spends less CPU per token than the server it measures; it sees the same events,
    the same times and the same usage, and a cancellation one event later."""
    protocol = PROTOCOLS[target.protocol]
    headers = {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}
    started = time.perf_counter()
    record = RequestRecord(target.label, level, prompt.id, started - run_start, cancel_after=cancel_after)
    text_events = 0
    done = False
    try:
        async with client.stream(
            "POST",
            protocol.endpoint(target.url, target.model),
            headers=headers,
            json=protocol.body(prompt, target.model, sampling),
        ) as response:
            record.status = response.status_code
            if response.status_code != 200:
                code, message = protocol.error(await response.aread())
                return _failed(
                    record,
                    f"{response.status_code}:{code}" if code else str(response.status_code),
                    message,
                    started,
                )
            if cancel_after == 0:
                return _cancelled(record, started)
            events = light_events(response.aiter_bytes(), protocol) if light else all_events(response, protocol)
            async for at, event in events:
                now = at - started
                if event.error is not None:
                    return _failed(record, f"stream:{event.error[0]}", event.error[1], started)
                if event.token:
                    if record.last_token is None:
                        record.ttft = now
                    else:
                        record.itl.append(now - record.last_token)
                    record.last_token = now
                    text_events += 1
                    if text_events == cancel_after:
                        # Leaving the `async with` unread closes the connection: the server sees the
                        # client go, as when a browser tab is closed mid-answer.
                        return _cancelled(record, started)
                if event.usage:
                    record.prompt_tokens = event.usage.get("prompt_tokens")
                    record.output_tokens = event.usage.get("completion_tokens")
                if event.done:
                    done = True
                    break
    except httpx.TimeoutException as exc:
        return _failed(record, "timeout", repr(exc), started)
    except httpx.ConnectError as exc:
        return _failed(record, "connect_error", repr(exc), started)
    except httpx.HTTPError as exc:
        return _failed(record, "transport_error", repr(exc), started)
    if not done:
        return _failed(record, "truncated", "the stream ended without [DONE]", started)
    if record.ttft is None:
        return _failed(record, "empty_response", "the stream carried no output", started)
    if record.output_tokens is None:
        record.output_tokens, record.usage_missing = text_events, True
    record.e2e = time.perf_counter() - started
    record.ok = True
    return record


async def all_events(response: httpx.Response, protocol: Protocol) -> AsyncIterator[tuple[float, Event]]:
    """Every server-sent event of the stream, decoded, with the time it arrived."""
    async for line in response.aiter_lines():
        if line.startswith("data:"):  # not blank separators, comments, `event:` lines
            yield time.perf_counter(), protocol.parse(line[5:].strip())


async def light_events(chunks: AsyncIterator[bytes], protocol: Protocol) -> AsyncIterator[tuple[float, Event]]:
    """The stream's events with the times they arrived, decoding only the first, the last LIGHT_TAIL
    and any error; every other `data:` line is one output event, taken on trust. Each event is
    passed on once LIGHT_TAIL more have arrived (or the stream ended), with its own arrival time."""
    buffer = b""
    first = True
    tail: list[tuple[float, bytes]] = []
    async for chunk in chunks:
        now = time.perf_counter()
        *lines, buffer = (buffer + chunk).split(b"\n")
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]" or ERROR_KEY in data:
                for at, held in tail:
                    yield at, protocol.parse(held.decode())
                tail = []
                yield now, protocol.parse(data.decode())
            elif first:
                yield now, protocol.parse(data.decode())
            else:
                tail.append((now, data))
                if len(tail) > LIGHT_TAIL:
                    yield tail.pop(0)[0], Event(token=True)
            first = False
    for at, held in tail:  # a stream cut short: what it had, decoded
        yield at, protocol.parse(held.decode())


def _cancelled(record: RequestRecord, started: float) -> RequestRecord:
    record.cancelled = True
    record.e2e = time.perf_counter() - started
    return record


def _failed(record: RequestRecord, code: str, message: str, started: float) -> RequestRecord:
    record.ok = False
    record.error_code = code
    record.error = message[:500]
    record.e2e = time.perf_counter() - started
    return record
