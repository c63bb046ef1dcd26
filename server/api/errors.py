"""One place that turns every failure into an answer in the caller's protocol.

`WaiError` carries the status, code and message (server/errors.py); this module only renders it:
Workers AI's envelope for `/client/v4/...`, OpenAI's `{"error": {...}}` for the `/v1` APIs, and
`{internalCode, message, name, description}` for the Workers binding's routes, and Anthropic's
`{"type": "error", "error": {...}}` for its Messages routes.
"""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from server import errors
from server.protocol import anthropic_answers, binding, gateway, openai_answers, workers_ai

log = logging.getLogger("wai.errors")


# OpenAI's paths: /v1/... and Cloudflare's own layout of them, /client/v4/accounts/{account_id}/ai/v1/...
OPENAI_PATH = re.compile(r"^/(v1|client/v4/accounts/[^/]*/ai/v1)/")


# Anthropic's Messages paths (api/anthropic.py), at /v1/messages and Workers AI's layout of /v1.
ANTHROPIC_PATH = re.compile(r"^/(v1|client/v4/accounts/[^/]*/ai/v1)/messages(/count_tokens)?$")


# OpenAI's Responses paths (api/responses.py): OpenAI's error object, counted as their own protocol.
RESPONSES_PATH = re.compile(r"^/(v1|client/v4/accounts/[^/]*/ai/v1)/responses(/[^/]*)?$")


# The Workers binding's paths (api/binding.py): the runtime's own, and wrangler's remote form. Its
# `/ai-gateway/gateways/...` calls (getUrl, getLog, patchLog) read Cloudflare's `errors[0].message`.
BINDING_PATH = re.compile(r"^/(run|ai-gateway/(?!gateways/).+|ai-api/.*|client/v4/accounts/[^/]*/ai/run/proxy)$")


# The AI Gateway's run route (api/gateway_urls.py): below /v1, in Workers AI's format.
GATEWAY_RUN_PATH = re.compile(r"^/v1/[^/]+/[^/]+/workers-ai/(?!v1/)")


def is_openai_path(path: str) -> bool:
    return OPENAI_PATH.match(path) is not None and GATEWAY_RUN_PATH.match(path) is None


def is_anthropic_path(path: str) -> bool:
    return ANTHROPIC_PATH.match(path) is not None


def is_responses_path(path: str) -> bool:
    return RESPONSES_PATH.match(path) is not None


def is_binding_path(path: str) -> bool:
    return BINDING_PATH.match(path) is not None


def wire_body(path: str, error: errors.WaiError, workers_ai_format: bool = False) -> tuple[int, dict]:
    """The status and JSON body of `error` in the protocol of the route at `path` (or in Workers AI's,
    for a route that says so: the universal endpoint); the AI Gateway's own refusals in its shape."""
    if error.from_gateway:
        return error.status, gateway.failure(error)
    if workers_ai_format:
        return error.status, workers_ai.failure(error)
    if is_anthropic_path(path):  # Anthropic's statuses agree with OpenAI's (404 for an unknown model)
        status = openai_answers.error_status(error)
        return status, anthropic_answers.error_body(error, status)
    if is_openai_path(path):
        return openai_answers.error_status(error), openai_answers.error_body(error)
    if is_binding_path(path):
        return error.status, binding.failure(error)
    return error.status, workers_ai.failure(error)


def render(request: Request, error: errors.WaiError) -> JSONResponse:
    record = getattr(request.state, "record", None)  # api/middleware.py; none on /metrics and probes
    if record is not None:
        record.fail(error)
    status, body = wire_body(request.url.path, error, getattr(request.state, "speaks_workers_ai", False))
    headers = error.headers
    if record is not None and is_binding_path(request.url.path):
        headers = {**headers, "cf-ai-req-id": record.request_id}  # the runtime keeps it as `env.AI.lastRequestId`
    return JSONResponse(body, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.WaiError)
    async def _wai_error(request: Request, error: errors.WaiError) -> JSONResponse:
        return render(request, error)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code in (404, 405):
            return render(request, errors.no_route())
        if exc.status_code < 500:
            return render(request, errors.bad_input(str(exc.detail)))
        return render(request, errors.internal_error())

    @app.exception_handler(ClientDisconnect)
    async def _client_left(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # The client hung up while sending its body: aborted, not a server failure.
        return render(request, errors.request_aborted())

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = "/" + "/".join(str(part) for part in first.get("loc", ())[1:])
        return render(request, errors.bad_input(f"{first.get('msg', 'invalid request')} at '{where}'"))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return render(request, errors.internal_error())
