"""OpenAI routes, at `/v1/...` and at Workers AI's `/client/v4/accounts/{account_id}/ai/v1/...`.

Thin: the body is validated by protocol/openai.py into the same neutral request the Workers AI
route builds, and the same pipeline (api/pipeline.py) runs it; protocol/openai_answers.py writes
the answers. `model` names a served model, or a fine-tune: its base model with that adapter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from server import errors
from server.api import openapi
from server.api.common import accepting_requests, catalog_entries, read_json_body
from server.api.gateway import GatewayCall, answer_via_header
from server.api.middleware import request_record
from server.api.pipeline import resolve, run_embeddings, run_text
from server.auth import require_api_key
from server.engine.types import TextDelta
from server.protocol import openai, openai_answers
from server.serving.embeddings import Embeddings
from server.serving.requests import TextRequest
from server.serving.text import Completion
from server.streaming import openai_events

api = APIRouter(dependencies=[Depends(require_api_key), Depends(accepting_requests)])


@dataclass(frozen=True)
class OpenAIEncoder:
    """Writes a chat completion or a completion, whole or as chunk events."""

    answer: openai_answers.ChatAnswer | openai_answers.CompletionAnswer

    def whole(self, completion: Completion) -> dict[str, Any]:
        return self.answer.whole(completion)

    def events(self, deltas: AsyncIterator[TextDelta]) -> AsyncIterator[bytes]:
        return openai_events(deltas, self.answer)


async def run_openai_text(
    request: Request,
    asked: Any,
    text: TextRequest,
    answer_type: type[openai_answers.ChatAnswer | openai_answers.CompletionAnswer],
    id_prefix: str,
):
    """Both text endpoints: `model` resolved (a fine-tune's name too), the answer an `answer_type`."""
    route = await resolve(request, asked.model, task="text-generation", finetunes=True)
    record = request_record(request)
    answer = answer_type(
        id=f"{id_prefix}-{record.request_id}",
        created=openai_answers.now(),
        model=asked.model,
        top_logprobs=text.top_logprobs,
        include_usage=asked.include_usage,
        timings=record.timings if request.app.state.settings.metrics.per_request else None,
    )
    return await run_text(request, route, text, OpenAIEncoder(answer))


@api.post(
    "/chat/completions",
    openapi_extra=openapi.model_body(openai.ChatCompletionRequest, "A chat completion request.", streams=True),
)
async def chat_completions(request: Request):
    body = await read_json_body(request)
    return await answer_via_header(request, openai_call(request, "chat/completions", body))


async def chat_completion(request: Request, body: Any) -> Response:
    chat = openai.parse(openai.ChatCompletionRequest, body)
    return await run_openai_text(request, chat, openai.text_request(chat), openai_answers.ChatAnswer, "chatcmpl")


@api.post(
    "/completions",
    openapi_extra=openapi.model_body(openai.CompletionRequest, "A legacy completion request.", streams=True),
)
async def completions(request: Request):
    body = await read_json_body(request)
    return await answer_via_header(request, openai_call(request, "completions", body))


async def completion(request: Request, body: Any) -> Response:
    completion = openai.parse(openai.CompletionRequest, body)
    text = openai.completion_text_request(completion)
    return await run_openai_text(request, completion, text, openai_answers.CompletionAnswer, "cmpl")


@api.post("/embeddings", openapi_extra=openapi.model_body(openai.EmbeddingsRequest, "An embeddings request."))
async def embeddings(request: Request):
    body = await read_json_body(request)
    return await answer_via_header(request, openai_call(request, "embeddings", body))


async def embedding(request: Request, body: Any) -> Response:
    embed = openai.parse(openai.EmbeddingsRequest, body)
    route = await resolve(request, embed.model, task="text-embeddings")

    def answer(result: Embeddings) -> dict[str, Any]:
        dimensions = len(result.vectors[0])
        if embed.dimensions is not None and embed.dimensions != dimensions:
            raise errors.bad_input(f"dimensions: this model's vectors have {dimensions} dimensions", param="dimensions")
        return openai_answers.embedding_list(result.vectors, embed.encoding_format, embed.model, result.prompt_tokens)

    return await run_embeddings(request, route, openai.embedding_request(embed), answer)


# The OpenAI routes by their path below /v1, for the gateway's URLs (api/gateway_urls.py).
ROUTES: dict[str, Callable[[Request, Any], Awaitable[Response]]] = {
    "chat/completions": chat_completion,
    "completions": completion,
    "embeddings": embedding,
}


def openai_call(request: Request, path: str, body: Any, route: str | None = None) -> GatewayCall:
    """The OpenAI route at `path` as a gateway's call, its model the body's."""
    model = body.get("model") if isinstance(body, dict) else None
    return GatewayCall(
        route=route or f"workers-ai/v1/{path}",
        request_type="openai",
        model=model if isinstance(model, str) else "",
        body=body,
        run=lambda: ROUTES[path](request, body),
    )


@api.get("/models")
async def models(request: Request):
    return openai_answers.model_list(catalog_entries(request), created=openai_answers.STARTED)


router = APIRouter()
router.include_router(api, prefix="/v1")
router.include_router(api, prefix="/client/v4/accounts/{account_id}/ai/v1")
