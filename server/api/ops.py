"""Operations endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from server import errors
from server import metrics as wai_metrics
from server.auth import bearer_token
from server.serving.registry import ModelRegistry

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and answering HTTP."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """200 only while every engine answers and the server takes requests: 503 while the engines start,
    after one dies, and while the server drains. `stores` says which shared store is up or down; one
    down does not make the replica unready, as every replica shares it, and text still serves."""
    registry: ModelRegistry = request.app.state.registry
    ready = registry.all_ready() and not request.app.state.lifecycle.draining
    engines = {service.model.name: service.engine.state.value for service in registry.services}
    body: dict[str, object] = {"status": "ready" if ready else "not ready", "models": engines}
    stores = await request.app.state.stores.health()
    if stores:
        body["stores"] = stores
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus text format: wai's series (server/metrics.py) and the engine's own `vllm:*` ones.

    With `metrics.api_key` set, only `Authorization: Bearer <that key>` may read them.
    """
    if not request.app.state.keys.opens_metrics(bearer_token(request)):
        raise errors.authentication_error()
    registry: ModelRegistry = request.app.state.registry
    for service in registry.services:
        wai_metrics.ENGINE_READY.labels(service.model.name).set(1 if service.engine.is_ready() else 0)
    return Response(generate_latest(wai_metrics.registry()), media_type=CONTENT_TYPE_LATEST)
