"""What every protocol's routes share: reading the body, and stopping work when the client leaves."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import Request

from server import errors
from server.protocol.catalog import Entry

T = TypeVar("T")


async def read_json_body(request: Request) -> Any:
    """The body as JSON whatever the Content-Type says, refusing more than the configured limit."""
    limit: int = request.app.state.settings.limits.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise errors.request_too_large()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise errors.request_too_large()
    try:
        value = json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise errors.bad_input(f"the body is not valid JSON: {exc}") from exc
    if b"\\ud" in body.lower():
        _reject_lone_surrogates(value)
    return value


def _reject_lone_surrogates(value: Any) -> None:
    """JSON escapes can spell half of a UTF-16 pair, which no tokenizer can encode."""
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        raise errors.bad_input("a string in the body is not valid Unicode (a lone surrogate escape)") from exc


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is out of range for a number")
    return value


def _reject_constant(name: str) -> None:
    # Python's json accepts NaN and Infinity; JSON does not, and no range check can hold for NaN.
    raise ValueError(f"{name} is not a JSON value")


async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Run `work`, cancelling it (and so aborting its engine request) if the client goes away."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            # Let the cancelled work finish its cleanup (the engine abort) before answering.
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        raise errors.request_aborted()
    return task.result()


async def _wait_for_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def accepting_requests(request: Request) -> None:
    """FastAPI dependency of the API routes: 503 / 3040 once the server drains (server/lifecycle.py)."""
    if request.app.state.lifecycle.draining:
        raise errors.service_unavailable()


def catalog_entries(request: Request) -> list[Entry]:
    """Every public name the server answers, in config order, for the catalog endpoints."""
    return [Entry(route.requested_name, route.service.model) for route in request.app.state.registry.routes()]
