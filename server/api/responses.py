"""OpenAI's Responses routes, at `/v1/responses` and under Workers AI's `.../ai/v1/`.

Thin: protocol/responses.py validates the body into the neutral request every protocol builds (after
the stored conversation of `previous_response_id`), the one pipeline (api/pipeline.py) runs it, and
protocol/responses_answers.py writes the response or its events. With `store` (the default, as
OpenAI's) the answer and its conversation are kept (serving/response_store.py) for `GET` and for
`previous_response_id`; `DELETE` removes one. The store unreachable (`database_url`), each call that
needs it answers 503 / 3048.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, Request

from server import errors
from server.api import openapi
from server.api.common import accepting_requests, read_json_body
from server.api.middleware import request_record
from server.api.pipeline import resolve, run_text
from server.auth import require_api_key
from server.engine.types import TextDelta
from server.protocol import responses, responses_answers
from server.serving.requests import Message
from server.serving.response_store import ResponseStore
from server.serving.text import Completion
from server.streaming import responses_events

api = APIRouter(dependencies=[Depends(require_api_key), Depends(accepting_requests)])


def store_of(request: Request) -> ResponseStore:
    return request.app.state.responses


@dataclass
class ResponsesEncoder:
    """Writes a response, whole or as events, and keeps it when asked to: a stream before its last
    event, a whole response (`answered`) before `create` sends it."""

    answer: responses_answers.ResponseAnswer
    conversation: tuple[Message, ...]
    store: ResponseStore | None  # None: not kept
    answered: dict[str, Any] | None = field(default=None, init=False)

    def whole(self, completion: Completion) -> dict[str, Any]:
        self.answered = self.answer.whole(completion)
        return self.answered

    def events(self, deltas: AsyncIterator[TextDelta]) -> AsyncIterator[bytes]:
        return responses_events(deltas, self.answer, self.keep)

    async def keep(self, body: dict[str, Any]) -> None:
        if self.store is not None:
            await self.store.keep(body, [*self.conversation, responses.output_turn(body["output"])])


@api.post(
    "/responses",
    openapi_extra=openapi.model_body(responses.ResponseRequest, "A Responses API request.", streams=True),
)
async def create(request: Request):
    asked = responses.parse(await read_json_body(request))
    store = store_of(request)
    earlier: list[Message] = []
    if asked.previous_response_id is not None:
        found = await store.conversation(asked.previous_response_id)
        if found is None:
            raise errors.response_not_found(asked.previous_response_id, param="previous_response_id")
        earlier = found
    turns = responses.conversation(asked, earlier)
    text = responses.text_request(asked, turns)
    route = await resolve(request, asked.model, task="text-generation", finetunes=True)
    answer = responses_answers.ResponseAnswer(
        id=f"resp_{request_record(request).request_id.replace('-', '')}", model=asked.model, echo=responses.echo(asked)
    )
    encoder = ResponsesEncoder(answer, turns, store if asked.store else None)
    reply = await run_text(request, route, text, encoder)
    if encoder.answered is not None:  # whole, not streamed: kept before it is sent
        await encoder.keep(encoder.answered)
    return reply


@api.get("/responses/{response_id}")
async def get(request: Request, response_id: str):
    body = await store_of(request).body(response_id)
    if body is None:
        raise errors.response_not_found(response_id)
    return body


@api.delete("/responses/{response_id}")
async def delete(request: Request, response_id: str):
    if not await store_of(request).delete(response_id):
        raise errors.response_not_found(response_id)
    return {"id": response_id, "object": "response.deleted", "deleted": True}


router = APIRouter()
router.include_router(api, prefix="/v1")
router.include_router(api, prefix="/client/v4/accounts/{account_id}/ai/v1")
