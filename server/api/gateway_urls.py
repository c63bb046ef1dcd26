"""The AI Gateway's own URLs, as on gateway.ai.cloudflare.com, answered by the one pipeline.

    POST /v1/{account}/{gateway}/workers-ai/{model}                 the run endpoint's semantics
    POST /v1/{account}/{gateway}/workers-ai/v1/chat/completions     OpenAI's (also completions, embeddings)
    POST /v1/{account}/{gateway}/compat/chat/completions            OpenAI's, `model` as `workers-ai/<model>`
    POST /v1/{account}/{gateway}                                    the universal endpoint: steps tried in turn

Options come in `cf-aig-*` headers (protocol/gateway.py); api/gateway.py does the gateway's work.
The router is included after every other /v1 route: `/v1/chat/completions` is OpenAI's, not a
universal request to the gateway `completions` of the account `chat`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from server import errors
from server.api.common import accepting_requests, read_json_body
from server.api.gateway import GatewayCall, through_gateway
from server.api.openai import ROUTES, openai_call
from server.api.workers_ai import run_call
from server.auth import require_api_key
from server.protocol import gateway as wire
from server.records import WORKERS_AI

router = APIRouter(
    prefix="/v1/{account_id}/{gateway_id}",
    dependencies=[Depends(require_api_key), Depends(accepting_requests)],
    # Their bodies are the routes' own below them (the run endpoint's, OpenAI's), described there.
    include_in_schema=False,
)


@router.post("/workers-ai/v1/{path:path}")
async def provider_openai(gateway_id: str, path: str, request: Request) -> Response:
    """OpenAI's routes below the gateway's workers-ai provider."""
    body = await read_json_body(request)
    if path not in ROUTES:
        raise errors.no_route()
    return await one_call(request, gateway_id, openai_call(request, path, body))


@router.post("/compat/chat/completions")
async def compat_chat(gateway_id: str, request: Request) -> Response:
    """The unified (compat) route: `model` names its provider, `workers-ai/<model>`."""
    body = await read_json_body(request)
    if isinstance(body, dict):
        body = {**body, "model": wire.compat_model(body.get("model"))}
    call = openai_call(request, "chat/completions", body, route="compat/chat/completions")
    return await one_call(request, gateway_id, call)


@router.post("/workers-ai/{model:path}")
async def provider_run(gateway_id: str, model: str, request: Request) -> Response:
    """The run endpoint below the gateway: the Workers AI envelope, or its event stream."""
    return await one_call(request, gateway_id, run_call(request, model, await read_json_body(request)))


@router.post("")
async def universal_endpoint(gateway_id: str, request: Request) -> Response:
    # Any two-part path below /v1 lands here: one that names no gateway is OpenAI's unknown path.
    try:
        await request.app.state.gateways.for_request(gateway_id)
    except errors.WaiError as error:
        raise errors.no_route() if error.status == 404 else error from None
    request_record_speaks_workers_ai(request)
    return await universal(request, gateway_id, await read_json_body(request))


async def universal(request: Request, gateway_id: str, body: Any) -> Response:
    """Each step a wai model (answered as the run endpoint) or an OpenAI route; the first to answer
    wins, `cf-aig-step` naming it. The request's `cf-aig-*` headers apply to every step; a step's
    own headers and config win over them."""
    shared = wire.options_from_headers(request.headers)
    calls = [
        replace(step_call(request, step), options=step.options.over(shared)) for step in wire.universal_steps(body)
    ]
    return await through_gateway(request, gateway_id, calls)


def step_call(request: Request, step: wire.Step) -> GatewayCall:
    path = step.endpoint.removeprefix("v1/")
    if step.endpoint.startswith("v1/") and path in ROUTES:
        return replace(openai_call(request, path, step.body), request_type="universal")
    return run_call(request, step.endpoint, step.body, request_type="universal")


async def one_call(request: Request, gateway_id: str, call: GatewayCall) -> Response:
    return await through_gateway(
        request, gateway_id, [replace(call, options=wire.options_from_headers(request.headers))]
    )


def request_record_speaks_workers_ai(request: Request) -> None:
    """The universal path looks like OpenAI's two-part ones but answers in Workers AI's format: its
    errors (api/errors.py) and its record say so."""
    request.state.record.protocol = WORKERS_AI
    request.state.speaks_workers_ai = True
