"""Operations endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from server.serving.registry import ModelRegistry

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and answering HTTP."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """200 only while every engine answers: 503 while they start and after one dies."""
    registry: ModelRegistry = request.app.state.registry
    ready = registry.all_ready()
    engines = {service.model.name: service.engine.state.value for service in registry.services}
    return JSONResponse({"status": "ready" if ready else "not ready", "models": engines},
                        status_code=200 if ready else 503)


@router.get("/metrics")
async def metrics() -> Response:
    """Prometheus text format: the engine's own `vllm:*` series and wai's."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
