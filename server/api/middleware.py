"""ASGI middleware: a RequestRecord for every API request, finished exactly once.

It sits outside the routes and the error handlers, so it sees every outcome: an answer sent in full,
an error rendered before any model was resolved (bad key, no route), a stream the client left (the
last body message never goes out) and a crash (the handler raised).

Each request's id is the client's `X-Request-Id` when it is safe (letters, digits and `._:-`, at most
128) and not already in flight, else a new uuid; it is echoed in `X-Request-Id` on every answer, is the
Workers AI `cf-ai-req-id`, the log line's `request_id` and the engine request's id.
"""

from __future__ import annotations

import re
import uuid

from fastapi import Request
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server import errors
from server.api.errors import is_anthropic_path, is_binding_path, is_openai_path, is_responses_path
from server.lifecycle import Deadline, Lifecycle
from server.records import ANTHROPIC, OPENAI, RESPONSES, WORKERS_AI, RequestRecord

# The APIs' paths. Probes, scrapes, docs and stray paths (/favicon.ico) are not API requests.
API_PREFIXES = ("/client/v4/", "/v1/")


REQUEST_ID_HEADER = "x-request-id"
# What a client's own request id may be: it goes into log lines and becomes the engine request id.
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_record(request: Request) -> RequestRecord:
    return request.state.record


def request_deadline(request: Request) -> Deadline:
    return request.state.deadline


def protocol_of(path: str) -> str:
    """The protocol an API path speaks, as the records and metrics name it."""
    if is_anthropic_path(path):
        return ANTHROPIC
    if is_responses_path(path):
        return RESPONSES
    return OPENAI if is_openai_path(path) else WORKERS_AI


class RecordRequests:
    def __init__(self, app: ASGIApp, lifecycle: Lifecycle, request_timeout_s: float, log_prompts: bool = False):
        self.app = app
        self.lifecycle = lifecycle
        self.request_timeout_s = request_timeout_s
        self.log_prompts = log_prompts
        self._ids_in_flight: set[str] = set()

    def request_id(self, scope: Scope) -> str:
        """The client's `X-Request-Id` when it is safe and not already in flight, else a new uuid."""
        sent = Headers(scope=scope).get(REQUEST_ID_HEADER, "")
        if CLIENT_REQUEST_ID.fullmatch(sent) and sent not in self._ids_in_flight:
            return sent
        return str(uuid.uuid4())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (scope["path"].startswith(API_PREFIXES) or is_binding_path(scope["path"])):
            await self.app(scope, receive, send)
            return
        protocol = protocol_of(scope["path"])
        record = RequestRecord(protocol, log_prompts=self.log_prompts, request_id=self.request_id(scope))
        self._ids_in_flight.add(record.request_id)
        deadline = self.lifecycle.open(self.request_timeout_s)
        scope.setdefault("state", {}).update(record=record, deadline=deadline)
        status: int | None = None
        answered = left = False

        async def watching_receive() -> Message:
            nonlocal left
            message = await receive()
            left |= message["type"] == "http.disconnect"
            return message

        async def watching_send(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = record.request_id
            await send(message)  # the server drops messages after a disconnect, hence `left`
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = not left

        try:
            await self.app(scope, watching_receive, watching_send)
        except Exception:
            # A crash: the outermost handler (api/errors.py) answers 500 / 3043 after this returns.
            record.fail(errors.internal_error())
            raise
        finally:
            key_use = scope["state"].get("key_use")
            if key_use is not None:
                await key_use.give_back()  # server/auth.py's Place: here, or in Redis
            self.lifecycle.close(deadline)
            self._ids_in_flight.discard(record.request_id)
            record.finish(status or 500, answered)
