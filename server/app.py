"""create_app(settings): the FastAPI application; its lifespan starts and stops the engines."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI
from starlette.types import ASGIApp

from server import metrics
from server.api import (
    anthropic,
    binding,
    finetunes,
    gateway_logs,
    gateway_urls,
    gateways,
    openai,
    openapi,
    ops,
    playground,
    responses,
    workers_ai,
)
from server.api import errors as api_errors
from server.api.connections import ErrorsEndWithTheirAnswer
from server.api.middleware import RecordRequests
from server.auth import KeyRing
from server.batch.jobs import BatchJobs
from server.config import ModelConfig, Settings
from server.engine.types import EmbeddingEngine, EngineClientSockets, Engines, TextEngine
from server.lifecycle import Lifecycle
from server.prepare import resolve_checkpoint
from server.serving.embeddings import EmbeddingService
from server.serving.finetunes import build_finetunes
from server.serving.gateway_limits import build_gateway_limits
from server.serving.gateway_logs import build_log_store
from server.serving.gateways import build_gateways
from server.serving.lora_checks import BaseModelShapes, BaseModelUnreadable, read_base_model_shapes
from server.serving.registry import ModelRegistry, Service
from server.serving.response_cache import build_response_cache
from server.serving.response_store import response_store
from server.serving.text import TextService
from server.stores.postgres import Database
from server.stores.shared import SharedStores

log = logging.getLogger("wai")


@dataclass(frozen=True)
class FrontEnd:
    """This process as one of several front ends sharing the engines (`wai serve --api-processes`,
    server/frontends.py): its index, and its sockets to each model's engine, by model name."""

    index: int
    count: int
    engines: dict[str, EngineClientSockets] = field(default_factory=dict)

    @property
    def runs_batch_items(self) -> bool:
        return self.index == 0  # one runner per batch store, so that no item runs twice


class VllmEngines:
    """Every model on its own vLLM engine, or, in a front end of several, on the engine core its
    supervisor runs (imported only here: vLLM takes seconds to import)."""

    def __init__(self, front_end: FrontEnd | None = None):
        self.shared = front_end.engines if front_end is not None else {}

    def text(self, model: ModelConfig, checkpoint: str, chat_template: str | None) -> TextEngine:
        from server.engine.vllm_engine import VllmTextEngine

        return VllmTextEngine(model, checkpoint, chat_template=chat_template, shared=self.shared.get(model.name))

    def embedding(self, model: ModelConfig, checkpoint: str) -> EmbeddingEngine:
        from server.engine.vllm_engine import VllmEmbeddingEngine

        return VllmEmbeddingEngine(model, checkpoint, shared=self.shared.get(model.name))


def build_registry(
    settings: Settings, engines: Engines, front_end: FrontEnd | None = None, database: Database | None = None
) -> ModelRegistry:
    """Resolve every model's weights now, so that a missing checkpoint fails at start, not per request."""
    checkpoints = resolve_checkpoints(settings)
    shapes = {
        model.name: lora_base_shapes(model, checkpoints[model.name]) for model in settings.models if model.lora.enabled
    }
    # A front end of several finds the store cleared by its supervisor, and must not clear it again
    # under another front end's uploads. With `database`, the fine-tunes are the ones every replica shares.
    adapters = build_finetunes(settings, shapes, database, clear_at_start=front_end is None)
    services: list[Service] = []
    for model in settings.models:
        checkpoint = checkpoints[model.name]
        if model.task == "text-embeddings":
            services.append(EmbeddingService(model, engines.embedding(model, checkpoint)))
        else:
            template = read_chat_template(model, settings.config_dir)
            services.append(TextService(model, engines.text(model, checkpoint, template), adapters))
        metrics.declare_model(model.name)
        for name in model.stands_in_for:
            log.warning(
                "%s stands in for %s: replies under that name carry x-wai-stand-in: %s", model.name, name, model.name
            )
    return ModelRegistry(services, adapters)


def resolve_checkpoints(settings: Settings) -> dict[str, str]:
    """Every model's checkpoint, by model name."""
    return {model.name: resolve_checkpoint(model, settings.cache_dir) for model in settings.models}


def lora_base_shapes(model: ModelConfig, checkpoint: str) -> BaseModelShapes:
    """What uploaded adapters are checked against; read once, from the checkpoint's headers."""
    try:
        return read_base_model_shapes(Path(checkpoint))
    except (OSError, ValueError) as exc:
        raise BaseModelUnreadable(f"{model.name} has LoRA enabled, but its checkpoint cannot be read: {exc}") from exc


def read_chat_template(model: ModelConfig, config_dir: Path) -> str | None:
    if model.chat_template is None:
        return None
    return (config_dir / model.chat_template).read_text()


async def run_engines(registry: ModelRegistry, lifecycle: Lifecycle, every_s: float = 1.0) -> None:
    """Start the engines, then watch them: once one that started is no longer ready, it died, and the
    server ends the requests in flight and exits non-zero. One that fails to start is logged and
    reported by /readyz."""
    started = []
    # One after another: engines loading at once would compete for the same cores and memory.
    for service in registry.services:
        with contextlib.suppress(Exception):
            await service.engine.start()
            started.append(service)
            metrics.ENGINE_READY.labels(service.model.name).set(1)
    while True:
        for service in started:
            if not service.engine.is_ready():
                metrics.ENGINE_READY.labels(service.model.name).set(0)
                await lifecycle.engine_died(service.model.name)
                return
        await asyncio.sleep(every_s)


class WaiApp(FastAPI):
    """FastAPI, with an unexpected exception ending at its answer (server/api/connections.py)."""

    def build_middleware_stack(self) -> ASGIApp:
        return ErrorsEndWithTheirAnswer(super().build_middleware_stack())


def create_app(settings: Settings, engines: Engines | None = None, front_end: FrontEnd | None = None) -> FastAPI:
    """The app of the one `wai serve` process, or (`front_end`) of one of its front-end processes."""
    stores = SharedStores.configured(settings)
    registry = build_registry(settings, engines or VllmEngines(front_end), front_end, stores.database)
    lifecycle = Lifecycle(settings.limits.drain_timeout_s)
    batch = BatchJobs(
        settings,
        registry,
        lifecycle,
        runs_items=front_end is None or front_end.runs_batch_items,
        database=stores.database,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Serve /healthz and /readyz (503) while the engines load in the background.
        engines = asyncio.create_task(run_engines(registry, lifecycle))
        await stores.open()  # its schema migrated now, or in the background while it is unreachable
        registry.adapters.start()  # shared fine-tunes: keeps this replica's copies in step
        await batch.start()  # queued batch items run once the engines are ready
        yield
        await batch.stop()  # items still running go back to the queue, for the next start
        engines.cancel()
        for service in registry.services:
            await service.engine.stop()
        await registry.adapters.stop()
        await stores.close()

    app = WaiApp(title="wai", description="Workers AI and OpenAI APIs on vLLM", lifespan=lifespan)
    app.state.settings = settings
    app.state.registry = registry
    app.state.adapters = registry.adapters
    app.state.lifecycle = lifecycle
    app.state.batch = batch
    app.state.stores = stores
    app.state.responses = response_store(settings, stores.database)
    app.state.keys = KeyRing(settings, stores.redis)
    app.state.gateways = build_gateways(settings, stores.database)
    app.state.gateway_logs = build_log_store(settings, stores.database)
    app.state.response_cache = build_response_cache(settings, stores.redis)
    app.state.gateway_limits = build_gateway_limits(settings, stores.redis)
    api_errors.install(app)
    app.add_middleware(
        RecordRequests,
        lifecycle=lifecycle,
        request_timeout_s=settings.limits.request_timeout_s,
        log_prompts=settings.log_prompts,
    )
    app.include_router(ops.router)
    app.include_router(binding.router)  # before the run route, whose {model:path} would take `run/proxy`
    app.include_router(gateways.router)
    app.include_router(gateways.binding_router)
    app.include_router(gateway_logs.router)
    app.include_router(gateway_logs.binding_router)
    app.include_router(workers_ai.router)
    app.include_router(openai.router)
    app.include_router(anthropic.router)
    app.include_router(responses.router)
    app.include_router(finetunes.router)
    app.include_router(playground.router)
    app.include_router(gateway_urls.router)  # last: its /v1/{account}/{gateway} would take OpenAI's two-part paths
    playground.mount_assets(app)
    openapi.install(app)  # /openapi.json: valid, with every request body (server/api/openapi.py)
    return app
