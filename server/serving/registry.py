"""Which service answers a public model name, and whether that name is a stand-in."""

from __future__ import annotations

from dataclasses import dataclass, replace

from server import errors
from server.serving.embeddings import EmbeddingService
from server.serving.finetunes import Finetunes
from server.serving.text import TextService

Service = TextService | EmbeddingService


@dataclass(frozen=True)
class Route:
    service: Service
    requested_name: str  # the model's name as the client called it
    finetune: str | None = None  # a fine-tune the client named instead of a model (OpenAI's `model`)

    @property
    def stand_in(self) -> str | None:
        """The real model's name when the requested name belongs to another model."""
        model = self.service.model
        return model.name if self.requested_name in model.stands_in_for else None


class ModelRegistry:
    def __init__(self, services: list[Service], adapters: Finetunes):
        self.services = services
        self.adapters = adapters
        self._by_name = {name: service for service in services for name in service.model.served_names}

    def route(self, name: str, task: str | None = None) -> Route:
        """The service for `name`; with `task`, only a model of that task ("No such model or task")."""
        service = self._by_name.get(name)
        if service is None or (task is not None and service.model.task != task):
            raise errors.unknown_model(name)
        return Route(service, name)

    def routes(self) -> list[Route]:
        """Every public name, in config order: a model's own name, then its aliases and stand-in names."""
        return [Route(service, name) for service in self.services for name in service.model.served_names]

    async def route_model_or_finetune(self, name: str, task: str | None = None) -> Route:
        """What a public name means where the protocol has only `model` (OpenAI): a served model,
        or a fine-tune's name or id, which means its base model with that adapter."""
        if name in self._by_name:
            return self.route(name, task)
        finetune = await self.adapters.find(name)
        if finetune is None:
            raise errors.unknown_model(name)
        return replace(self.route(finetune.model, task), finetune=name)

    def all_ready(self) -> bool:
        return bool(self.services) and all(service.engine.is_ready() for service in self.services)
