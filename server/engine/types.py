"""What the serving layer hands the engine and gets back: plain data, no vLLM types."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class GenerationParams:
    """Sampling in vLLM's own terms; serving/sampling.py decides how wire values map here."""

    max_tokens: int
    temperature: float
    top_p: float = 1.0
    top_k: int = 0  # 0: off (vLLM's "consider every token")
    seed: int | None = None
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    n: int = 1
    logprobs: int | None = None
    # Structured output: at most one of these.
    json_schema: dict[str, Any] | None = None
    json_object: bool = False


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
