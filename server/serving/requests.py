"""A validated request, the same for every protocol: what the client asked for, in its words."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from server.serving.tools import ToolUse


@dataclass(frozen=True)
class OutputFormat:
    type: Literal["text", "json_object", "json_schema"] = "text"
    schema: dict[str, Any] | None = None


@dataclass(frozen=True)
class RunOptions:
    """How to run a request, apart from what to generate."""

    reject_if_busy: bool = False  # 429 at once when the model's running slots are all taken
    background: bool = False  # waits behind interactive requests for the engine (`X-Priority: low`)


@dataclass(frozen=True)
class TextRequest:
    """Exactly one of `prompt` and `messages` is set.

    `sampling` holds the sampling fields the client gave, by their names in protocol/sampling.py
    (plus `n`, `stop` and `logprobs`: the number of most likely tokens to return per position),
    already checked against their ranges; a field left out takes the model's default.
    """

    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    raw: bool = False
    tools: ToolUse | None = None  # the tools offered and tool_choice (serving/tools.py)
    sampling: Mapping[str, Any] = field(default_factory=dict)
    output: OutputFormat = field(default_factory=OutputFormat)
    lora: str | None = None
    stream: bool = False
    options: RunOptions = field(default_factory=RunOptions)

    @property
    def top_logprobs(self) -> int | None:
        """None: no logprobs; k: the sampled token's and the k most likely at each position."""
        return self.sampling.get("logprobs")

    @property
    def as_sent(self) -> Any:
        """The prompt or the messages, for the request log."""
        return self.prompt if self.prompt is not None else self.messages


@dataclass(frozen=True)
class EmbeddingRequest:
    """Texts to embed, in order; `pooling` is how token vectors become one vector per text."""

    texts: tuple[str, ...]
    pooling: Literal["mean", "cls"] = "mean"
