"""The one request pipeline every protocol's routes run: a route is a parser and an encoder.

    route = await resolve(request, name)     # the model; from here on the request counts under it
    text = <protocol>.parse(...)             # the wire format, validated into a TextRequest
    return await run_text(request, route, text, encoder)   # encoder: that protocol's answer writer

run_text hands the request to the text service's one entry (TextService.generate: fine-tune,
template, limits, sampling, the engine's deltas counted by the request's record), streams or
collects the deltas, and sets the reply headers.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any, Protocol

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from server import errors
from server.api.common import until_disconnected
from server.api.middleware import request_deadline, request_record
from server.engine.types import TextDelta
from server.serving.embeddings import Embeddings, EmbeddingService
from server.serving.registry import ModelRegistry, Route
from server.serving.requests import EmbeddingRequest, TextRequest
from server.serving.text import Completion, TextService

STAND_IN_HEADER = "x-wai-stand-in"
TIMEOUT_HEADER = "x-request-timeout"
PRIORITY_HEADER = "x-priority"


class TextEncoder(Protocol):
    """How one protocol writes a text answer: whole, or as a stream of server-sent events."""

    def whole(self, completion: Completion) -> dict[str, Any]: ...

    def events(self, deltas: AsyncIterator[TextDelta]) -> AsyncIterator[bytes]: ...


def registry_of(request: Request) -> ModelRegistry:
    return request.app.state.registry


async def resolve(request: Request, name: str, task: str | None = None, finetunes: bool = False) -> Route:
    """The route for a model name, recorded once: from here on the request counts under that model.
    With `finetunes`, a fine-tune's name or id also names its base model with that adapter."""
    registry = registry_of(request)
    route = await registry.route_model_or_finetune(name, task) if finetunes else registry.route(name, task)
    request_record(request).serve(route.service.model)
    return route


def reply_headers(route: Route, request_id: str) -> dict[str, str]:
    """Every answer's headers: Workers AI's request id, and the stand-in's real name if any."""
    headers = {"cf-ai-req-id": request_id}
    if route.stand_in:
        headers[STAND_IN_HEADER] = route.stand_in
    return headers


async def run_text(request: Request, route: Route, text: TextRequest, encoder: TextEncoder) -> Response:
    """Run a text request of any protocol on its route's model and answer in that protocol."""
    deadline = request_deadline(request)
    deadline.shorten(requested_timeout(request))
    text = replace(text, options=replace(text.options, background=asks_background(request)))
    if route.finetune is not None:
        text = replace(text, lora=route.finetune)
    record = request_record(request)
    service = route.service
    assert isinstance(service, TextService), "routes resolve text requests to text models"
    generation = await service.generate(text, route.requested_name, record, deadline)
    headers = reply_headers(route, record.request_id)
    if text.stream:
        primed = await until_disconnected(request, first_delta_ready(generation.deltas))
        return StreamingResponse(
            encoder.events(primed), media_type="text/event-stream", headers={**headers, "cache-control": "no-cache"}
        )
    completion = await until_disconnected(request, generation.completion())
    return JSONResponse(encoder.whole(completion), headers=headers)


def requested_timeout(request: Request) -> float:
    """The client's `X-Request-Timeout` in seconds (infinite when not sent); 400 when not a number above 0."""
    sent = request.headers.get(TIMEOUT_HEADER)
    if sent is None:
        return math.inf
    try:
        seconds = float(sent)
    except ValueError:
        seconds = math.nan
    if not seconds > 0:  # also NaN
        raise errors.bad_input(f"the {TIMEOUT_HEADER} header must be a number of seconds above 0, not {sent!r}")
    return seconds


def asks_background(request: Request) -> bool:
    """`X-Priority: low` lets interactive requests go first; `normal` (or none) is interactive."""
    sent = request.headers.get(PRIORITY_HEADER, "normal").lower()
    if sent not in ("low", "normal"):
        raise errors.bad_input(f"the {PRIORITY_HEADER} header must be low or normal, not {sent!r}")
    return sent == "low"


async def first_delta_ready(deltas: AsyncIterator[TextDelta]) -> AsyncIterator[TextDelta]:
    """Start generating and wait for the first delta before the 200 goes out, so that a request
    the engine refuses still gets a proper error status instead of a broken stream."""
    first = await anext(deltas)
    return _prepend(first, deltas)


async def _prepend(first: TextDelta, rest: AsyncIterator[TextDelta]) -> AsyncIterator[TextDelta]:
    yield first
    async for delta in rest:
        yield delta


async def run_embeddings(
    request: Request, route: Route, embedding: EmbeddingRequest, answer: Callable[[Embeddings], dict[str, Any]]
) -> JSONResponse:
    """Embed for any protocol: vectors from the route's model, usage counted, `answer` encodes."""
    record = request_record(request)
    service = route.service
    assert isinstance(service, EmbeddingService), "routes resolve embedding requests to embedding models"
    result = await until_disconnected(request, service.embed(embedding, record.request_id))
    record.embedded(result.prompt_tokens)
    return JSONResponse(answer(result), headers=reply_headers(route, record.request_id))
