"""A request through an AI Gateway: the one pipeline's answer, cached, limited, retried and logged.

Every gateway route (api/gateway_urls.py, the REST routes with `cf-aig-gateway-id`, the binding's
`options.gateway`) describes its work as `GatewayCall`s (one; a universal request one per step) and
hands them to `through_gateway`:

    gateway = for_request(id)              # declared, stored, or `default` made on first use
    authorization, then the gateway's rate limit            # 401 / 2009, 429 / 2003
    for each step: the cache (HIT: replayed, no engine work), else attempts with retries and a
                   timeout to the first byte; a failed step falls back to the next
    the answer's headers (cf-aig-log-id, -event-id, -cache-status, -step), its bytes teed into the
    cache and into the log, written before the last byte goes out

A failed attempt is retried only on the engine's retryable errors (overload, restarting).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from server import errors, metrics
from server.api.middleware import request_record
from server.api.pipeline import registry_of
from server.auth import presented_key
from server.protocol import gateway as wire
from server.records import RequestRecord
from server.serving.gateway_logs import GatewayLog, new_log_id
from server.serving.gateway_policy import GatewayOptions
from server.serving.gateways import Gateway
from server.serving.response_cache import CachedAnswer, cache_key
from server.streaming import repadded

log = logging.getLogger("wai.gateway")

# Headers never written into a log: they carry credentials.
SECRET_HEADERS = frozenset({"authorization", "cf-aig-authorization", "x-api-key", "cookie", "proxy-authorization"})


@dataclass(frozen=True)
class GatewayCall:
    """One way to answer: the route below the gateway (as logged), the model as named, the body,
    and `run`, which answers it through the pipeline (api/pipeline.py) and may be called again."""

    route: str  # "workers-ai/@cf/meta/llama-3-8b-instruct", "workers-ai/v1/chat/completions"
    request_type: str  # "workers-ai", "openai", "binding" or "universal": answers of one type look alike
    model: str
    body: Any
    run: Callable[[], Awaitable[Response]]
    options: GatewayOptions = field(default_factory=GatewayOptions)


@dataclass
class Visit:
    """One request's passage through a gateway: what its log and its answer's headers say."""

    gateway: Gateway
    log_id: str
    event_id: str
    started: float = field(default_factory=time.time)
    step: int = 0


async def answer_via_header(request: Request, call: GatewayCall) -> Response:
    """The REST routes: through the gateway named by `cf-aig-gateway-id`, or straight without one."""
    gateway_id = request.headers.get(wire.GATEWAY_ID)
    if gateway_id is None:
        return await call.run()
    return await through_gateway(
        request, gateway_id, [replace(call, options=wire.options_from_headers(request.headers))]
    )


async def through_gateway(request: Request, gateway_id: str, calls: list[GatewayCall]) -> Response:
    """Answer the first of `calls` that succeeds, through the gateway `gateway_id`."""
    gateway: Gateway = await request.app.state.gateways.for_request(gateway_id)
    options = calls[0].options
    visit = Visit(gateway, new_log_id(), options.event_id or str(uuid.uuid4()))
    record = request_record(request)
    try:
        check_authorization(request, gateway, options)
        retry_after = await request.app.state.gateway_limits.take(gateway)
        if retry_after is not None:
            raise errors.gateway_rate_limited(retry_after)
        for step, call in enumerate(calls):
            visit.step = step
            try:
                return await answer_step(request, visit, call)
            except errors.WaiError:
                if step + 1 == len(calls):
                    raise
                record.next_attempt()  # falls back to the next step
    except errors.WaiError as error:
        await keep_log(request, visit, calls[visit.step], error.status, error=error)
        raise replace(error, headers={**error.headers, **answer_headers(visit, cached=False)}) from None
    raise AssertionError("unreachable: the last step answers or raises")


def check_authorization(request: Request, gateway: Gateway, options: GatewayOptions) -> None:
    """A gateway with `authentication` needs `cf-aig-authorization: Bearer <a key of this server>`."""
    if not gateway.authentication:
        return
    ring = request.app.state.keys
    token = options.authorization
    if not token or (ring.keys and ring.find(token) is None):
        raise errors.gateway_unauthorized()


async def answer_step(request: Request, visit: Visit, call: GatewayCall) -> Response:
    """The cached answer when there is one, else the engine's, kept for the next time."""
    ttl = call.options.cache_ttl(visit.gateway)
    key = request_cache_key(request, visit.gateway, call) if ttl else None
    cache = request.app.state.response_cache
    if key is not None:
        hit = await cache.lookup(visit.gateway.id, key)
        if hit is not None:
            return await replay(request, visit, call, hit)
    response = await with_retries(request, visit.gateway, call)
    return await teed(request, visit, call, response, key, ttl)


def request_cache_key(request: Request, gateway: Gateway, call: GatewayCall) -> str:
    """The request's own `cf-aig-cache-key`, else a digest of the route, model, caller and body."""
    if call.options.cache_key is not None:
        return hashlib.sha256(f"{gateway.id}\0{call.options.cache_key}".encode()).hexdigest()
    key = presented_key(request)
    return cache_key(
        route=f"{gateway.id}:{call.request_type}:{call.route}",
        model=call.model,
        key_identity=hashlib.sha256(key.encode()).hexdigest() if key else "",
        body=json.dumps(call.body, sort_keys=True, separators=(",", ":")).encode(),
        generation=str(gateway.modified_at) if gateway.cache_invalidate_on_update else "",
    )


async def with_retries(request: Request, gateway: Gateway, call: GatewayCall) -> Response:
    """Attempts until one answers: a retryable failure waits by the backoff and tries again."""
    attempts = call.options.attempts(gateway)
    for attempt in range(1, attempts + 1):
        try:
            return await to_first_byte(call)
        except errors.WaiError as error:
            if attempt == attempts or not error.retryable:
                raise
            metrics.GATEWAY_RETRIES.labels(gateway.id).inc()
            request_record(request).next_attempt()
            await asyncio.sleep(call.options.delay_before_retry(attempt, gateway))
    raise AssertionError("unreachable: the last attempt answers or raises")


async def to_first_byte(call: GatewayCall) -> Response:
    """One attempt, bounded by `cf-aig-request-timeout`: a stream's first event, a whole answer's
    last byte. Past it the attempt is cancelled (its engine request aborted) and 408 / 3007 answers."""
    timeout = call.options.timeout_s()
    try:
        return await asyncio.wait_for(call.run(), timeout)
    except TimeoutError:
        raise errors.request_timeout() from None


async def replay(request: Request, visit: Visit, call: GatewayCall, hit: CachedAnswer) -> Response:
    """A cached answer, as it was first sent: a stream as a stream (with new padding), whole as whole."""
    count_under_its_model(request, call)
    headers = {**hit.headers, **answer_headers(visit, cached=True)}
    await keep_log(request, visit, call, hit.status, cached=True, body=hit.body, media_type=hit.media_type)
    if hit.streamed:
        body = repadded(hit.body, request.app.state.settings.streaming)
        return StreamingResponse(
            iter([body]),
            status_code=hit.status,
            media_type=hit.media_type,
            headers={**headers, "cache-control": "no-cache"},
        )
    return Response(hit.body, status_code=hit.status, media_type=hit.media_type, headers=headers)


def count_under_its_model(request: Request, call: GatewayCall) -> None:
    """A hit runs nothing, yet counts in the metrics and the log line under the model it names; a
    fine-tune's name (which only the engine's route resolves) counts under none."""
    try:
        route = registry_of(request).route(call.model)
    except errors.WaiError:
        return
    request_record(request).serve(route.service.model)


async def teed(
    request: Request, visit: Visit, call: GatewayCall, response: Response, key: str | None, ttl: int
) -> Response:
    """The engine's answer with the gateway's headers; its bytes kept in the cache (when `key`) and
    in the log once complete."""
    response.headers.update(answer_headers(visit, cached=False))
    media_type = response.headers.get("content-type", "application/json")
    own_headers = {name: value for name, value in response.headers.items() if name.startswith("x-wai-")}
    if not isinstance(response, StreamingResponse):
        body = bytes(response.body)
        if key is not None and response.status_code == 200:
            answer = CachedAnswer(response.status_code, media_type, body, streamed=False, headers=own_headers)
            await request.app.state.response_cache.keep(visit.gateway.id, key, answer, ttl)
        await keep_log(request, visit, call, response.status_code, body=body, media_type=media_type)
        return response
    events = response.body_iterator

    async def kept_as_sent() -> AsyncIterator[bytes]:
        sent = bytearray()
        finished = False
        try:
            async for chunk in events:
                data = chunk.encode() if isinstance(chunk, str) else bytes(chunk)
                sent += data
                yield data
            finished = True
        finally:
            record = request_record(request)
            if finished:
                if key is not None and record.error is None:
                    answer = CachedAnswer(
                        response.status_code, media_type, bytes(sent), streamed=True, headers=own_headers
                    )
                    await request.app.state.response_cache.keep(visit.gateway.id, key, answer, ttl)
                await keep_log(request, visit, call, response.status_code, body=bytes(sent), media_type=media_type)
            else:  # the client left mid-stream: nothing more can be awaited here
                aborted = keep_log(
                    request, visit, call, response.status_code, body=bytes(sent), media_type=media_type,
                    error=errors.request_aborted(),
                )  # fmt: skip
                asyncio.get_running_loop().create_task(aborted)

    response.body_iterator = kept_as_sent()
    return response


def answer_headers(visit: Visit, cached: bool) -> dict[str, str]:
    return {
        wire.LOG_ID: visit.log_id,
        wire.EVENT_ID: visit.event_id,
        wire.CACHE_STATUS: "HIT" if cached else "MISS",
        wire.STEP: str(visit.step),
    }


async def keep_log(
    request: Request,
    visit: Visit,
    call: GatewayCall,
    status: int,
    *,
    cached: bool = False,
    body: bytes | None = None,
    media_type: str = "application/json",
    error: errors.WaiError | None = None,
) -> None:
    """Write the request's log, unless it or its gateway asked for none. A logs store that cannot
    take it costs the log, never the answer."""
    gateway, options = visit.gateway, call.options
    if not options.collects_log(gateway):
        return
    settings = request.app.state.settings.gateways
    entry = gateway_log(request, visit, call, status, cached, body, media_type, error, settings.max_logged_body_bytes)
    keep_at_most = min(gateway.log_management or math.inf, settings.logs_max_per_gateway)
    try:
        await request.app.state.gateway_logs.add(
            entry, keep_at_most=int(keep_at_most), when_full=gateway.log_management_strategy or "DELETE_OLDEST"
        )
    except errors.WaiError as failure:
        log.warning("gateway %s: log %s not kept: %s", gateway.id, visit.log_id, failure)


def gateway_log(
    request: Request,
    visit: Visit,
    call: GatewayCall,
    status: int,
    cached: bool,
    body: bytes | None,
    media_type: str,
    error: errors.WaiError | None,
    max_body_bytes: int,
) -> GatewayLog:
    """The log of this request, from its record: tokens, cost, timings, and (unless the request said
    `cf-aig-collect-log-payload: false`) both bodies, cut to `max_body_bytes`."""
    record: RequestRecord = request_record(request)
    error = error or record.error
    options = call.options
    sent = json.dumps(call.body, ensure_ascii=False).encode()
    engine_ran = not cached
    tokens_in = record.prompt_tokens if engine_ran else None
    tokens_out = record.total_completion_tokens if engine_ran else None
    cost = (
        options.custom_cost.of(tokens_in or 0, tokens_out or 0)
        if options.custom_cost is not None and engine_ran
        else (record.cost_usd() if engine_ran else 0.0)
    )
    return GatewayLog(
        id=visit.log_id,
        gateway_id=visit.gateway.id,
        created_at=visit.started,
        provider=wire.PROVIDER,
        model=call.model,
        path=call.route,
        request_type=call.request_type,
        status_code=status,
        success=status < 400 and error is None,
        cached=cached,
        duration_ms=_ms_since(record, time.monotonic()) or 0,  # from the request's arrival, as its TTFT
        ttft_ms=_ms_since(record, record.first_token_at) if engine_ran else None,
        error_code=error.code if error is not None else None,
        model_type=task_of(request, record.model),
        finetune=record.lora if record.lora != metrics.NO_LORA else None,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        tokens_cached=record.cached_tokens if engine_ran else None,
        cost=cost,
        custom_cost=options.custom_cost is not None,
        metadata=dict(options.metadata),
        event_id=visit.event_id,
        step=visit.step,
        request_content_type="application/json",
        response_content_type=media_type,
        request_head=json.dumps(shown_headers(request.headers.items())),
        response_head=json.dumps(answer_headers(visit, cached)),
        request_size=len(sent),
        response_size=len(body or b""),
        request_body=sent[:max_body_bytes] if options.collect_log_payload else None,
        response_body=(body or b"")[:max_body_bytes] if options.collect_log_payload else None,
    )


def task_of(request: Request, model: str) -> str | None:
    """The served model's task (`text-generation`, `text-embeddings`); None before one was resolved."""
    for service in request.app.state.registry.services:
        if service.model.name == model:
            return service.model.task
    return None


def shown_headers(headers: Any) -> dict[str, str]:
    """A request's headers as a log shows them: never a credential."""
    return {name: value for name, value in headers if name.lower() not in SECRET_HEADERS}


def _ms_since(record: RequestRecord, moment: float | None) -> int | None:
    return None if moment is None else round((moment - record.started) * 1000)
