"""Anthropic's Messages routes, at `/v1/messages` and under Workers AI's `.../ai/v1/`.

Also at `/client/v4/accounts/{account_id}/ai/v1/...`. Thin: protocol/anthropic.py validates the body into
the neutral request every protocol builds, the one pipeline (api/pipeline.py) runs it, and
protocol/anthropic_answers.py writes the message or its events.
`model` names a served model, or a fine-tune: its base model with that adapter. Keys come as Bearer or
in `x-api-key`; `anthropic-version` is accepted whatever its value.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request

from server.api import openapi
from server.api.common import accepting_requests, read_json_body
from server.api.middleware import request_record
from server.api.pipeline import resolve, run_text
from server.auth import require_api_key
from server.engine.types import TextDelta
from server.protocol import anthropic, anthropic_answers
from server.serving.requests import TextRequest
from server.serving.text import Completion, TextService
from server.streaming import anthropic_events

api = APIRouter(dependencies=[Depends(require_api_key), Depends(accepting_requests)])


@dataclass(frozen=True)
class MessagesEncoder:
    """Writes a message, whole or as Anthropic's events."""

    answer: anthropic_answers.MessageAnswer

    def whole(self, completion: Completion) -> dict[str, Any]:
        return self.answer.whole(completion)

    def events(self, deltas: AsyncIterator[TextDelta]) -> AsyncIterator[bytes]:
        return anthropic_events(deltas, self.answer)


@api.post(
    "/messages",
    openapi_extra=openapi.model_body(anthropic.MessagesRequest, "An Anthropic Messages request.", streams=True),
)
async def messages(request: Request):
    asked = anthropic.parse(anthropic.MessagesRequest, await read_json_body(request))
    text = anthropic.text_request(asked)
    route = await resolve(request, asked.model, task="text-generation", finetunes=True)
    answer = anthropic_answers.MessageAnswer(id=f"msg_{request_record(request).request_id}", model=asked.model)
    return await run_text(request, route, text, MessagesEncoder(answer))


@api.post(
    "/messages/count_tokens",
    openapi_extra=openapi.model_body(anthropic.CountTokensRequest, "Count a Messages request's input tokens."),
)
async def count_tokens(request: Request):
    asked = anthropic.parse(anthropic.CountTokensRequest, await read_json_body(request))
    route = await resolve(request, asked.model, task="text-generation", finetunes=True)
    service = route.service
    assert isinstance(service, TextService), "routes resolve text requests to text models"
    text = TextRequest(messages=anthropic.conversation(asked), tools=anthropic.tool_use(asked))
    return {"input_tokens": await service.count_prompt_tokens(text)}


router = APIRouter()
router.include_router(api, prefix="/v1")
router.include_router(api, prefix="/client/v4/accounts/{account_id}/ai/v1")
