"""Workers AI routes: `POST /client/v4/accounts/{account_id}/ai/run/{model}`."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from server.api.common import read_json_body, until_disconnected
from server.api.recording import request_record
from server.auth import require_api_key
from server.protocol import workers_ai
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
    text_request = workers_ai.parse_run_input(await read_json_body(request))
    record.show_input(text_request)
    prepared = await service.prepare(text_request, model)
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
