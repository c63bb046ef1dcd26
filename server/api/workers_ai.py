"""Workers AI routes: the run endpoint (text generation and embeddings) and the model catalog."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from server.api import batch, openapi
from server.api.common import accepting_requests, catalog_entries, read_json_body
from server.api.gateway import GatewayCall, answer_via_header
from server.api.pipeline import registry_of, resolve, run_embeddings, run_text
from server.auth import require_api_key
from server.config import StreamingConfig
from server.engine.types import TextDelta
from server.protocol import catalog, workers_ai
from server.serving.embeddings import EmbeddingService
from server.serving.registry import Route
from server.serving.text import Completion
from server.streaming import workers_ai_events

router = APIRouter(
    prefix="/client/v4/accounts/{account_id}/ai", dependencies=[Depends(require_api_key), Depends(accepting_requests)]
)


@dataclass(frozen=True)
class RunEncoder:
    """Writes the run endpoint's text answer: the result envelope, or Workers AI's event stream."""

    json_mode: bool
    streaming: StreamingConfig
    enveloped: bool = True  # the binding routes (api/binding.py) answer the bare result

    def whole(self, completion: Completion) -> dict[str, Any]:
        return enveloped_if(self.enveloped, workers_ai.text_result(completion, self.json_mode))

    def events(self, deltas: AsyncIterator[TextDelta]) -> AsyncIterator[bytes]:
        return workers_ai_events(deltas, self.streaming)


def enveloped_if(enveloped: bool, result: dict[str, Any]) -> dict[str, Any]:
    """The run endpoint answers in the envelope; the binding routes (api/binding.py) the bare result."""
    return workers_ai.success(result) if enveloped else result


RUN_BODY = openapi.one_of_bodies(
    {"TextGenerationInput": workers_ai.TEXT_GENERATION_INPUT, "TextEmbeddingsInput": workers_ai.TEXT_EMBEDDINGS_INPUT},
    "The model's input as /ai/models/schema publishes it: a text-generation model takes TextGenerationInput "
    "(a prompt or messages), an embeddings model TextEmbeddingsInput.",
    streams=True,
)


@router.post("/run/{model:path}", openapi_extra=RUN_BODY)
async def run(account_id: str, model: str, request: Request):
    route = await resolve(request, model)
    body = await read_json_body(request)
    if batch.is_batch_call(body, request.query_params):  # queueRequest: api/batch.py
        return await batch.queue_or_poll(request, route, body)
    return await answer_via_header(request, run_call(request, model, body))


@router.post(
    "/run", openapi_extra=openapi.one_of_bodies({"RunRequest": workers_ai.MODEL_AND_INPUT}, "The model and its input.")
)
async def run_named_in_body(account_id: str, request: Request):
    """The newer REST form: `{"model": ..., "input": {...}}`, otherwise the run endpoint."""
    model, inputs = workers_ai.model_and_input(await read_json_body(request))
    return await answer_via_header(request, run_call(request, model, inputs))


def run_call(
    request: Request, model: str, body: Any, request_type: str = "workers-ai", enveloped: bool = True
) -> GatewayCall:
    """The run endpoint's work on `model` as a gateway's call (api/gateway.py)."""

    async def run() -> Response:
        return await run_inputs(request, await resolve(request, model), body, enveloped)

    return GatewayCall(route=f"workers-ai/{model}", request_type=request_type, model=model, body=body, run=run)


async def run_inputs(request: Request, route: Route, body: Any, enveloped: bool = True) -> Response:
    """A model's inputs run on its route, answered in the envelope or (the binding routes) bare."""
    if isinstance(route.service, EmbeddingService):
        embedding = workers_ai.parse_embeddings_input(body)
        return await run_embeddings(
            request,
            route,
            embedding,
            lambda result: enveloped_if(enveloped, workers_ai.embeddings_result(result.vectors, result.pooling)),
        )
    text = workers_ai.parse_run_input(body, request.query_params)
    encoder = RunEncoder(
        json_mode=text.output.type != "text", streaming=request.app.state.settings.streaming, enveloped=enveloped
    )
    return await run_text(request, route, text, encoder)


@router.get("/models/search")
async def search_models(
    request: Request,
    search: str | None = None,
    task: str | None = None,
    author: str | None = None,
    page: Annotated[int, Query(ge=catalog.FIRST_PAGE)] = catalog.FIRST_PAGE,
    per_page: Annotated[int, Query(ge=1, le=catalog.MAX_PER_PAGE)] = catalog.DEFAULT_PER_PAGE,
):
    """Every served name, filtered and paged; past the last page the result is empty."""
    entries = catalog_entries(request)
    return catalog.search_page(entries, page, per_page, search=search, task=task, author=author)


@router.get("/models/schema")
async def model_schema(request: Request, model: str):
    """The input and output JSON schemas the validator enforces for this model, with its defaults."""
    return workers_ai.success(workers_ai.published_schema(registry_of(request).route(model).service.model))
