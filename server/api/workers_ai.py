"""Workers AI routes: the run endpoint (text generation and embeddings) and the model catalog."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from server.api.common import catalog_entries, read_json_body, until_disconnected
from server.api.recording import request_record
from server.auth import require_api_key
from server.protocol import catalog, workers_ai
from server.records import RequestRecord
from server.serving.embeddings import EmbeddingService
from server.serving.registry import ModelRegistry, Route
from server.streaming import workers_ai_events

router = APIRouter(prefix="/client/v4/accounts/{account_id}/ai", dependencies=[Depends(require_api_key)])

STAND_IN_HEADER = "x-wai-stand-in"


def reply_headers(route: Route, request_id: str) -> dict[str, str]:
    headers = {"cf-ai-req-id": request_id}
    if route.stand_in:
        headers[STAND_IN_HEADER] = route.stand_in
    return headers


@router.post("/run/{model:path}")
async def run(account_id: str, model: str, request: Request):
    registry: ModelRegistry = request.app.state.registry
    record = request_record(request)
    route = registry.route(model)
    service = route.service
    record.serve(service.model)
    if isinstance(service, EmbeddingService):
        return await run_embeddings(route, request, record)
    text_request = workers_ai.parse_run_input(await read_json_body(request))
    record.show_input(text_request)
    prepared = await service.prepare(text_request, model)
    record.serve(service.model, lora=prepared.adapter_name)
    headers = reply_headers(route, record.request_id)

    if text_request.stream:
        deltas = await until_disconnected(request, service.open_stream(prepared, record))
        events = workers_ai_events(deltas, request.app.state.settings.streaming)
        return StreamingResponse(events, media_type="text/event-stream",
                                 headers={**headers, "cache-control": "no-cache"})

    completion = await until_disconnected(request, service.complete(prepared, record))
    choice = completion.choices[0]
    response = choice.text
    if text_request.output.type != "text":
        response = workers_ai.json_response(choice.text)
    result = {
        "response": response,
        "tool_calls": [],
        "usage": workers_ai.usage(completion.prompt_tokens, completion.completion_tokens),
    }
    return JSONResponse(workers_ai.success(result), headers=headers)


async def run_embeddings(route: Route, request: Request, record: RequestRecord) -> JSONResponse:
    embedding_request = workers_ai.parse_embeddings_input(await read_json_body(request))
    result = await until_disconnected(request, route.service.embed(embedding_request, record.request_id))
    record.embedded(result.prompt_tokens)
    return JSONResponse(workers_ai.success(workers_ai.embeddings_result(result.vectors, result.pooling)),
                        headers=reply_headers(route, record.request_id))


@router.get("/models/search")
async def search_models(
    request: Request,
    search: str | None = None,
    task: str | None = None,
    author: str | None = None,
    page: Annotated[int, Query(ge=1)] = 1,
    per_page: Annotated[int, Query(ge=1, le=1000)] = 50,
):
    """Every served name, filtered and paged; past the last page the result is empty."""
    entries = catalog_entries(request)
    return catalog.search_page(entries, page, per_page, search=search, task=task, author=author)


@router.get("/models/schema")
async def model_schema(request: Request, model: str):
    """The input and output JSON schemas the validator enforces for this model."""
    registry: ModelRegistry = request.app.state.registry
    service = registry.route(model).service
    return workers_ai.success(workers_ai.published_schema(service.model.task))
