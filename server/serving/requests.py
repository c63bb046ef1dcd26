"""A validated text request, the same for every protocol: what the client asked for, in its words."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class SamplingOptions:
    """Sampling as the client sent it; None means "not given" (the model's default applies)."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    stop: tuple[str, ...] = ()
    n: int = 1
    logprobs: int | None = None  # None: no logprobs; k: the sampled token's and the k most likely


@dataclass(frozen=True)
class OutputFormat:
    type: Literal["text", "json_object", "json_schema"] = "text"
    schema: dict[str, Any] | None = None


@dataclass(frozen=True)
class TextRequest:
    """Exactly one of `prompt` and `messages` is set."""

    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    raw: bool = False
    tools: list[dict[str, Any]] | None = None
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    output: OutputFormat = field(default_factory=OutputFormat)
    lora: str | None = None
    stream: bool = False


@dataclass(frozen=True)
class EmbeddingRequest:
    """Texts to embed, in order; `pooling` is how token vectors become one vector per text."""

    texts: tuple[str, ...]
    pooling: Literal["mean", "cls"] = "mean"
