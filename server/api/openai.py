"""OpenAI routes, at `/v1/...` and at Workers AI's `/client/v4/accounts/{account_id}/ai/v1/...`.

Thin: the body is validated by protocol/openai.py into the same neutral request the Workers AI
route builds, and the same services run it.
"""

from __future__ import annotations

from dataclasses import replace

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from server import errors
from server.api.common import catalog_entries, read_json_body, until_disconnected
from server.api.recording import request_record
from server.api.workers_ai import reply_headers
from server.auth import require_api_key
from server.protocol import openai
from server.serving.registry import ModelRegistry
from server.streaming import openai_chunks

api = APIRouter(dependencies=[Depends(require_api_key)])


@api.post("/chat/completions")
async def chat_completions(request: Request):
    chat = openai.parse(openai.ChatCompletionRequest, await read_json_body(request))
    registry: ModelRegistry = request.app.state.registry
    # `model` names a served model, or a fine-tune: its base model with that adapter.
    route, finetune = registry.route_model_or_finetune(chat.model, task="text-generation")
    record = request_record(request)
    record.serve(route.service.model)
    text_request = replace(openai.text_request(chat), lora=finetune)
    record.show_input(text_request)
    prepared = await route.service.prepare(text_request, route.requested_name)
    record.serve(route.service.model, lora=prepared.adapter_name)
    id, created = f"chatcmpl-{record.request_id}", openai.now()
    headers = reply_headers(route, record.request_id)
    top_logprobs = text_request.sampling.logprobs

    if chat.stream:
        deltas = await until_disconnected(request, route.service.open_stream(prepared, record))
        include_usage = chat.stream_options is not None and chat.stream_options.include_usage
        chunks = openai_chunks(deltas, id=id, created=created, model=chat.model, include_usage=include_usage,
                               top_logprobs=top_logprobs)
        return StreamingResponse(chunks, media_type="text/event-stream",
                                 headers={**headers, "cache-control": "no-cache"})

    completion = await until_disconnected(request, route.service.complete(prepared, record))
    choices = [
        openai.completion_choice(
            choice.index, choice.text, choice.finish_reason,
            None if top_logprobs is None else openai.logprobs_content(choice.logprobs, top_logprobs),
        )
        for choice in completion.choices
    ]
    usage = openai.usage(completion.prompt_tokens, completion.completion_tokens, completion.cached_tokens)
    body = openai.chat_completion(id=id, created=created, model=chat.model, choices=choices, usage=usage)
    return JSONResponse(body, headers=headers)


@api.post("/embeddings")
async def embeddings(request: Request):
    embed = openai.parse(openai.EmbeddingsRequest, await read_json_body(request))
    registry: ModelRegistry = request.app.state.registry
    route = registry.route(embed.model, task="text-embeddings")
    record = request_record(request)
    record.serve(route.service.model)
    result = await until_disconnected(request, route.service.embed(openai.embedding_request(embed),
                                                                   record.request_id))
    record.embedded(result.prompt_tokens)
    dimensions = len(result.vectors[0])
    if embed.dimensions is not None and embed.dimensions != dimensions:
        raise errors.bad_input(f"dimensions: this model's vectors have {dimensions} dimensions",
                               param="dimensions")
    body = openai.embedding_list(result.vectors, embed.encoding_format, embed.model, result.prompt_tokens)
    return JSONResponse(body, headers=reply_headers(route, record.request_id))


@api.get("/models")
async def models(request: Request):
    return openai.model_list(catalog_entries(request), created=openai.STARTED)


router = APIRouter()
router.include_router(api, prefix="/v1")
router.include_router(api, prefix="/client/v4/accounts/{account_id}/ai/v1")
