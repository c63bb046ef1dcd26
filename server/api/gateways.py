"""AI Gateway routes under `/client/v4/accounts/{account_id}/ai-gateway/gateways`: gateways as objects.

Cloudflare's gateways API, as the cloudflare SDK's `client.ai_gateway` calls it: list (paged, with
`search`), create, get, update (PUT, a replace), delete (the gateway and its logs), and a gateway's URL
for a provider. Every answer is in Cloudflare's envelope; a page past the last is empty, which is where
the SDK's auto-pagination stops. The Workers binding's `env.AI.gateway(id).getUrl(provider)` asks
`GET /ai-gateway/gateways/{id}/url/{provider}` and reads the URL from an object (docs/compatibility.md,
"AI Gateway").
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from server import errors
from server.api import openapi
from server.api.common import accepting_requests, read_json_body
from server.auth import require_api_key, require_finetunes_key
from server.protocol import gateway_objects, workers_ai
from server.serving.gateways import Gateways

# Gateways are managed as fine-tunes are: with a key for the management API.
router = APIRouter(
    prefix="/client/v4/accounts/{account_id}/ai-gateway/gateways",
    dependencies=[Depends(require_finetunes_key), Depends(accepting_requests)],
)
# The binding's own protocol (as api/binding.py's routes): a model key, and out of /openapi.json.
binding_router = APIRouter(
    dependencies=[Depends(require_api_key), Depends(accepting_requests)], include_in_schema=False
)

FIRST_PAGE, DEFAULT_PER_PAGE, MAX_PER_PAGE = 1, 20, 100
# The host the Workers runtime puts in its binding's requests; no client can reach wai there.
BINDING_HOST = "workers-binding.ai"
# The account in the URLs the binding is given (its calls name none; wai ignores accounts).
BINDING_ACCOUNT = "local"
ANY_ADDRESS = ("0.0.0.0", "::", "")  # listening everywhere: reached on loopback from the same machine

LIST_PARAMETERS = {
    "parameters": [
        {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "default": FIRST_PAGE}},
        {
            "name": "per_page",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PER_PAGE, "default": DEFAULT_PER_PAGE},
        },
        {"name": "search", "in": "query", "schema": {"type": "string"}, "description": "Part of a gateway's id."},
    ]
}


def gateways_of(request: Request) -> Gateways:
    return request.app.state.gateways


def envelope(result: Any, **extra: Any) -> JSONResponse:
    return JSONResponse({**workers_ai.success(result), **extra})


@router.get("", openapi_extra=LIST_PARAMETERS)
async def list_gateways(account_id: str, request: Request) -> JSONResponse:
    query = request.query_params
    page = _count(query.get("page"), "page", FIRST_PAGE, most=None)
    per_page = _count(query.get("per_page"), "per_page", DEFAULT_PER_PAGE, most=MAX_PER_PAGE)
    shown, total = await gateways_of(request).list(page, per_page, query.get("search"))
    info = {"page": page, "per_page": per_page, "count": len(shown), "total_count": total}
    return envelope([gateway_objects.render(g, account_id) for g in shown], result_info=info)


@router.post(
    "",
    openapi_extra=openapi.schema_body(
        "GatewayCreate", gateway_objects.body_schema(with_id=True), "The gateway to create, with its id."
    ),
)
async def create_gateway(account_id: str, request: Request) -> JSONResponse:
    gateway = gateway_objects.parse_create(await read_json_body(request))
    return envelope(gateway_objects.render(await gateways_of(request).create(gateway), account_id))


@router.get("/{gateway_id}")
async def get_gateway(account_id: str, gateway_id: str, request: Request) -> JSONResponse:
    return envelope(gateway_objects.render(await gateways_of(request).get(gateway_id), account_id))


@router.put(
    "/{gateway_id}",
    openapi_extra=openapi.schema_body(
        "GatewayUpdate", gateway_objects.body_schema(with_id=False), "Every setting of the gateway (a replace)."
    ),
)
async def update_gateway(account_id: str, gateway_id: str, request: Request) -> JSONResponse:
    gateway = gateway_objects.parse_update(await read_json_body(request), gateway_id)
    return envelope(gateway_objects.render(await gateways_of(request).update(gateway_id, gateway), account_id))


@router.delete("/{gateway_id}")
async def delete_gateway(account_id: str, gateway_id: str, request: Request) -> JSONResponse:
    deleted = await gateways_of(request).delete(gateway_id)
    await request.app.state.gateway_logs.delete_gateway(gateway_id)  # "its stored logs" go with it
    return envelope(gateway_objects.render(deleted, account_id))


@router.get("/{gateway_id}/url/{provider}")
async def gateway_url(account_id: str, gateway_id: str, provider: str, request: Request) -> JSONResponse:
    return envelope(await url_of(request, account_id, gateway_id, provider))


@binding_router.get("/ai-gateway/gateways/{gateway_id}/url/{provider}")
async def binding_gateway_url(gateway_id: str, provider: str, request: Request) -> JSONResponse:
    return await binding_url_answer(request, BINDING_ACCOUNT, gateway_id, provider)


async def binding_url_answer(request: Request, account_id: str, gateway_id: str, provider: str) -> JSONResponse:
    """`env.AI.gateway(id).getUrl(provider)`'s answer: the URL in an object, unlike the REST route's."""
    url = await url_of(request, account_id, gateway_id, provider)
    return envelope(gateway_objects.binding_url(url))


async def url_of(request: Request, account_id: str, gateway_id: str, provider: str) -> str:
    """Where this server answers for the gateway and provider; 404 / 7002 for an unknown gateway."""
    await gateways_of(request).addressable(gateway_id)
    return gateway_objects.gateway_url(own_base_url(request), account_id, gateway_id, provider)


def own_base_url(request: Request) -> str:
    """This server's address as the client reached it; for the binding's calls, which name the
    runtime's own host, the address wai listens on."""
    if request.url.hostname != BINDING_HOST:
        return str(request.base_url)
    settings = request.app.state.settings
    scheme = "https" if settings.tls.enabled else "http"
    host = "127.0.0.1" if settings.host in ANY_ADDRESS else settings.host
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{settings.port}/"


def _count(sent: str | None, name: str, default: int, most: int | None) -> int:
    """A paging parameter: a whole number from 1 (to `most`), `default` when not sent."""
    if sent is None:
        return default
    if not (sent.isascii() and sent.isdigit()) or int(sent) < 1 or (most is not None and int(sent) > most):
        detail = f"{name} must be a whole number from 1" + (f" to {most}" if most else "")
        raise errors.gateway_input_invalid(detail, ("query", name))
    return int(sent)
