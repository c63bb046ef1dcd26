"""The Workers binding routes: a Worker's `env.AI.run(model, inputs, options)`, answered by wai.

Cloudflare's runtime (workerd's `cloudflare-internal:ai-api` module) posts the call to the binding's
fetcher as `POST /run?version=3` (`/ai-gateway/run?version=3` with a `gateway` option: through
that gateway), the model in `cf-consn-model-id`, the body `{"inputs": {...}, "options": {...}}`, and reads
the request id from `cf-ai-req-id`; `env.AI.models()` is `GET /ai-api/models/search`. `wrangler dev`
forwards the same calls to `/client/v4/accounts/{account_id}/ai/run/proxy`, keeping the method and
sending the original URL in `X-Forwarded`.

An answer is the run endpoint's without the envelope (protocol/binding.py): the same pipeline runs it
(api/workers_ai.py's `run_inputs`). Errors are rendered for the runtime by api/errors.py. These routes
are the runtime's own protocol, not an API to call by hand, so they stay out of /openapi.json.
"""

from __future__ import annotations

import re
from dataclasses import replace
from urllib.parse import parse_qsl, unquote, urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from server import errors
from server.api import gateways
from server.api.common import accepting_requests, read_json_body
from server.api.gateway import through_gateway
from server.api.gateway_urls import universal
from server.api.pipeline import resolve
from server.api.workers_ai import run_call as run_call_of
from server.api.workers_ai import search_models
from server.auth import require_api_key
from server.protocol import binding, catalog
from server.protocol import gateway as wire

router = APIRouter(dependencies=[Depends(require_api_key), Depends(accepting_requests)], include_in_schema=False)

RUN_PATHS = ("/run", "/ai-gateway/run")
MODELS_PATH = "/ai-api/models/search"
# `env.AI.gateway(id).getUrl(provider)` (api/gateways.py), as wrangler forwards it.
GATEWAY_URL_PATH = re.compile(r"^/ai-gateway/gateways/([^/]+)/url/([^/]+)$")


@router.post("/run")
@router.post("/ai-gateway/run")
async def binding_run(request: Request) -> Response:
    return await run_call(request)


# `env.AI.models(params)`: the catalog's search, whose `result` the runtime returns.
router.get(MODELS_PATH)(search_models)


@router.api_route("/client/v4/accounts/{account_id}/ai/run/proxy", methods=["GET", "POST"])
async def remote_binding(account_id: str, request: Request):
    """wrangler's remote form: the call it forwards, told apart by the original URL's path."""
    original = urlsplit(request.headers.get(binding.FORWARDED_HEADER, ""))
    if request.method == "POST" and original.path in ("", *RUN_PATHS):
        return await run_call(request)
    if request.method == "GET" and original.path == MODELS_PATH:
        query = dict(parse_qsl(original.query))
        return await search_models(
            request,
            search=query.get("search"),
            task=query.get("task"),
            author=query.get("author"),
            page=_count(query, "page", catalog.FIRST_PAGE, most=None),
            per_page=_count(query, "per_page", catalog.DEFAULT_PER_PAGE, most=catalog.MAX_PER_PAGE),
        )
    gateway_url = GATEWAY_URL_PATH.match(original.path)
    if request.method == "GET" and gateway_url:
        gateway_id, provider = (unquote(part) for part in gateway_url.groups())
        return await gateways.binding_url_answer(request, account_id, gateway_id, provider)
    raise errors.no_route()


async def run_call(request: Request) -> Response:
    """One `env.AI.run`: its model from the header, its inputs run as the run endpoint runs them;
    with a `gateway` option, through that gateway (api/gateway.py)."""
    model = request.headers.get(binding.MODEL_HEADER)
    if not model:
        raise errors.bad_input(f"the {binding.MODEL_HEADER} header must name the model", param="model")
    await resolve(request, model)
    inputs, options = binding.call(await read_json_body(request))
    gateway = options.pop("gateway", None)
    call = run_call_of(request, model, binding.as_run_body(inputs, options), request_type="binding", enveloped=False)
    if gateway is None:
        return await call.run()
    gateway_id, gateway_options = wire.options_from_binding(gateway)
    return await through_gateway(request, gateway_id, [replace(call, options=gateway_options)])


@router.post("/ai-gateway/universal/run/{gateway_id}")
async def binding_universal(gateway_id: str, request: Request) -> Response:
    """`env.AI.gateway(id).run(steps)`: the universal endpoint, its options in `cf-aig-*` headers."""
    return await universal(request, gateway_id, await read_json_body(request))


def _count(query: dict[str, str], name: str, default: int, most: int | None) -> int:
    """A paging parameter of the forwarded URL: a whole number from 1 (to `most`), `default` when not sent."""
    sent = query.get(name, str(default))
    if not sent.isdigit() or int(sent) < 1 or (most is not None and int(sent) > most):
        raise errors.bad_input(f"'/{name}' must be a whole number from 1" + (f" to {most}" if most else ""), param=name)
    return int(sent)
