"""ASGI middleware: a RequestRecord for every API request, finished exactly once.

It sits outside the routes and the error handlers, so it sees every outcome: an answer sent in full,
an error rendered before any model was resolved (bad key, no route), a stream the client left (the
last body message never goes out) and a crash (the handler raised).
"""

from __future__ import annotations

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server import errors
from server.api.errors import is_openai_path
from server.records import OPENAI, WORKERS_AI, RequestRecord

# The APIs' paths. Probes, scrapes, docs and stray paths (/favicon.ico) are not API requests.
API_PREFIXES = ("/client/v4/", "/v1/")


def request_record(request: Request) -> RequestRecord:
    return request.state.record


class RecordRequests:
    def __init__(self, app: ASGIApp, log_prompts: bool = False):
        self.app = app
        self.log_prompts = log_prompts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIXES):
            await self.app(scope, receive, send)
            return
        protocol = OPENAI if is_openai_path(scope["path"]) else WORKERS_AI
        record = RequestRecord(protocol, log_prompts=self.log_prompts)
        scope.setdefault("state", {})["record"] = record
        status: int | None = None
        answered = left = False

        async def watching_receive() -> Message:
            nonlocal left
            message = await receive()
            left |= message["type"] == "http.disconnect"
            return message

        async def watching_send(message: Message) -> None:
            nonlocal status, answered
            await send(message)  # the server drops messages after a disconnect, hence `left`
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = not left

        try:
            await self.app(scope, watching_receive, watching_send)
        except Exception:
            # A crash: the outermost handler (api/errors.py) answers 500 / 3043 after this returns.
            record.fail(errors.internal_error())
            raise
        finally:
            record.finish(status or 500, answered)
