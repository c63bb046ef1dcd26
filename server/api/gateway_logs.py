"""AI Gateway log routes under `/client/v4/accounts/{account_id}/ai-gateway/gateways/{gateway_id}/logs`.

Cloudflare's logs API, as the cloudflare SDK's `client.ai_gateway.logs` calls it: list (filtered,
ordered, paged; a page past the last is empty, where the SDK's auto-pagination stops), bulk delete,
one log's detail, its stored request and response bodies (the bodies themselves, with their content
types, not in the envelope; 404 / 7002 for a log kept without payload), and PATCH of its feedback,
score and metadata. The Workers binding's `env.AI.gateway(id).getLog(id)` and `.patchLog(id, ...)` ask
`/ai-gateway/gateways/{id}/logs/{log_id}`. The gateway must exist (404 / 7002); logs hold user data,
so their key is the gateways API's.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from server import errors
from server.api import openapi
from server.api.common import accepting_requests, read_json_body
from server.auth import require_api_key, require_finetunes_key
from server.protocol import gateway_logs, workers_ai
from server.serving.gateway_logs import GatewayLog, LogStore

router = APIRouter(
    prefix="/client/v4/accounts/{account_id}/ai-gateway/gateways/{gateway_id}/logs",
    dependencies=[Depends(require_finetunes_key), Depends(accepting_requests)],
)
# The binding's own protocol (as api/binding.py's routes): a model key, and out of /openapi.json.
binding_router = APIRouter(
    prefix="/ai-gateway/gateways/{gateway_id}/logs",
    dependencies=[Depends(require_api_key), Depends(accepting_requests)],
    include_in_schema=False,
)

PATCH_BODY = openapi.schema_body("GatewayLogPatch", gateway_logs.PATCH_SCHEMA, "What to set on the log.")


async def logs_of(request: Request, gateway_id: str) -> LogStore:
    """The logs store, once the gateway is known to exist (404 / 7002 otherwise)."""
    await request.app.state.gateways.for_request(gateway_id)
    return request.app.state.gateway_logs


async def one_log(request: Request, gateway_id: str, log_id: str) -> GatewayLog:
    found = await (await logs_of(request, gateway_id)).get(gateway_id, log_id)
    if found is None:
        raise errors.gateway_not_found()
    return found


@router.get("", openapi_extra=gateway_logs.LIST_PARAMETERS)
async def list_logs(account_id: str, gateway_id: str, request: Request) -> JSONResponse:
    query = gateway_logs.list_query(request.query_params.multi_items())
    page = await (await logs_of(request, gateway_id)).page(gateway_id, query)
    return JSONResponse(
        {
            **workers_ai.success([gateway_logs.list_item(log) for log in page.items]),
            "result_info": gateway_logs.result_info(page, query),
        }
    )


@router.delete("", openapi_extra=gateway_logs.DELETE_PARAMETERS)
async def delete_logs(account_id: str, gateway_id: str, request: Request) -> JSONResponse:
    query, limit = gateway_logs.delete_query(request.query_params.multi_items())
    deleted = await (await logs_of(request, gateway_id)).delete(gateway_id, query, limit)
    return JSONResponse(workers_ai.success({"deleted": deleted}))  # the SDK reads the top-level `success`


@router.get("/{log_id}")
async def get_log(account_id: str, gateway_id: str, log_id: str, request: Request) -> JSONResponse:
    return JSONResponse(workers_ai.success(gateway_logs.detail(await one_log(request, gateway_id, log_id))))


@router.get("/{log_id}/request")
async def log_request_body(account_id: str, gateway_id: str, log_id: str, request: Request) -> Response:
    log = await one_log(request, gateway_id, log_id)
    return stored_body(log.request_body, log.request_content_type)


@router.get("/{log_id}/response")
async def log_response_body(account_id: str, gateway_id: str, log_id: str, request: Request) -> Response:
    log = await one_log(request, gateway_id, log_id)
    return stored_body(log.response_body, log.response_content_type)


def stored_body(body: bytes | None, content_type: str) -> Response:
    """The body as it was logged; a log kept without payload has none to give."""
    if body is None:
        raise errors.gateway_not_found()
    return Response(body, media_type=content_type)


@router.patch("/{log_id}", openapi_extra=PATCH_BODY)
async def patch_log(account_id: str, gateway_id: str, log_id: str, request: Request) -> JSONResponse:
    return await patch_answer(request, gateway_id, log_id)


async def patch_answer(request: Request, gateway_id: str, log_id: str) -> JSONResponse:
    change = gateway_logs.log_patch(await read_json_body(request))
    store = await logs_of(request, gateway_id)
    if not await store.patch(gateway_id, log_id, change.feedback, change.score, change.metadata):
        raise errors.gateway_not_found()
    return JSONResponse(workers_ai.success({}))


@binding_router.get("/{log_id}")
async def binding_get_log(gateway_id: str, log_id: str, request: Request) -> JSONResponse:
    """`getLog`: `{"result": <log>}`, its metadata an object as the binding's type has it."""
    return JSONResponse(workers_ai.success(gateway_logs.binding_log(await one_log(request, gateway_id, log_id))))


@binding_router.patch("/{log_id}")
async def binding_patch_log(gateway_id: str, log_id: str, request: Request) -> JSONResponse:
    return await patch_answer(request, gateway_id, log_id)
