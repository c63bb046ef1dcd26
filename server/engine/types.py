"""The engine interface: what the serving layer hands the engine and gets back, as plain data.

Plain data and errors, with no vLLM types. engine/vllm_engine.py implements the interface on vLLM; the
fast tests implement it with scripted deltas (tests/support/fakes.py)."""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from server.config import ModelConfig

T = TypeVar("T")


class EngineState(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    DEAD = "dead"
    STOPPED = "stopped"


class EngineUnavailable(Exception):
    """The engine is starting, has died or was stopped."""


class EngineRejected(Exception):
    """The engine refused the request as invalid (for example a JSON schema it cannot compile)."""


class UnsupportedVllm(Exception):
    """The installed vLLM is outside the releases wai runs on (engine/vllm_compat.py)."""


class AdapterLoadFailed(Exception):
    """The engine could not load a LoRA adapter; the message says why."""


@dataclass(frozen=True)
class EngineClientSockets:
    """What one front end needs to reach a shared engine core (engine/shared_engine.py): its own pair
    of listening sockets (passed to the process, which adopts them), and which of the engine's `count`
    clients it is."""

    addresses: dict[str, Any]
    index: int
    count: int


@dataclass(frozen=True)
class GenerationParams:
    """Sampling in vLLM's own terms; serving/sampling.py decides how wire values map here.

    `sampling` holds vLLM `SamplingParams` fields by their own names (temperature, top_p, seed...),
    only those the request sets: every other field keeps vLLM's default.
    """

    max_tokens: int
    n: int = 1
    sampling: dict[str, Any] = field(default_factory=dict)
    # Structured output: at most one of these.
    json_schema: dict[str, Any] | None = None
    json_object: bool = False
    # The engine schedules lower values first (vLLM's priority policy); equal ones in arrival order.
    priority: int = 0


@dataclass
class TextDelta:
    """One step of a generation: new text for choice `index`, and running token counts."""

    index: int
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None = None  # "stop" | "length" | "abort", when this choice is done
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    cached_tokens: int = 0
    # Seconds the request waited in the engine's queue before it was first scheduled, once known.
    queue_seconds: float | None = None


@dataclass(frozen=True)
class Adapter:
    """A LoRA fine-tune to apply to one request: a unique key, a positive engine id and its folder.

    `key` must never be reused for different weights (the engine caches adapters by key and id),
    so the serving layer passes the fine-tune's uuid, not its user-facing name.
    """

    key: str
    engine_id: int
    path: str
    name: str = ""  # the fine-tune's name, for metric labels and logs


class Engine(Protocol):
    """One served model on one engine: lifecycle, readiness and tokenizer access."""

    state: EngineState

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def is_ready(self) -> bool: ...

    async def with_tokenizer(self, work: Callable[..., T], *args: Any) -> T:
        """`work(tokenizer, *args)` off the event loop."""
        ...


class TextEngine(Engine, Protocol):
    def generate(
        self, prompt_token_ids: list[int], params: GenerationParams, request_id: str, adapter: Adapter | None = None
    ) -> AsyncGenerator[TextDelta, None]:
        """Deltas until every choice finishes; closing the iterator early aborts the request."""
        ...


class EmbeddingEngine(Engine, Protocol):
    async def embed(self, token_ids: list[list[int]], pooling: str, request_id: str) -> list[list[float]]:
        """One normalized vector per input, in order."""
        ...


class Engines(Protocol):
    """Builds each model's engine: vLLM's (server/app.py), or the fast tests' fakes."""

    def text(self, model: ModelConfig, checkpoint: str, chat_template: str | None) -> TextEngine: ...

    def embedding(self, model: ModelConfig, checkpoint: str) -> EmbeddingEngine: ...
