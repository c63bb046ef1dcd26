"""A validated request, the same for every protocol: what the client asked for, in its words.

protocol/ turns each wire format into these types; nothing below protocol/ reads a wire shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal


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
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # a JSON Schema of an object


@dataclass(frozen=True)
class ToolUse:
    """The tools a request offers and whether the model must, may or must not call one (tool_choice)."""

    tools: tuple[Tool, ...]
    mode: Literal["auto", "none", "required", "function"] = "auto"
    name: str | None = None  # the tool to call, with mode "function"

    @property
    def active(self) -> bool:
        """Whether the answer is decoded as a call (or, with auto, a call or text)."""
        return bool(self.tools) and self.mode != "none"

    @property
    def callable(self) -> tuple[Tool, ...]:
        return tuple(tool for tool in self.tools if self.mode != "function" or tool.name == self.name)

    def tool(self, name: str) -> Tool:
        return next(tool for tool in self.tools if tool.name == name)


@dataclass(frozen=True)
class ToolCall:
    """A call of a tool: one the model made, or a past one in the conversation. The arguments of a
    call the model made are an object; a past call's are what the client sent, decoded when they
    were JSON text."""

    id: str
    name: str
    arguments: Any


@dataclass(frozen=True)
class Message:
    """One turn of a conversation; an assistant turn may hold the calls it made instead of text."""

    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None  # on a tool turn: the call it answers


@dataclass(frozen=True)
class TextRequest:
    """Exactly one of `prompt` and `messages` is set.

    `sampling` holds the sampling fields the client gave, by their names in protocol/sampling.py
    (plus `n`, `stop` and `logprobs`: the number of most likely tokens to return per position),
    already checked against their ranges; a field left out takes the model's default.
    """

    prompt: str | None = None
    messages: tuple[Message, ...] | None = None
    raw: bool = False
    tools: ToolUse | None = None  # the tools offered and tool_choice
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
        if self.messages is None:
            return self.prompt
        return [_logged(message) for message in self.messages]


def _logged(message: Message) -> dict[str, Any]:
    logged: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        logged["tool_calls"] = [{"name": c.name, "arguments": c.arguments} for c in message.tool_calls]
    if message.tool_call_id is not None:
        logged["tool_call_id"] = message.tool_call_id
    return logged


@dataclass(frozen=True)
class EmbeddingRequest:
    """Texts to embed, in order; `pooling` is how token vectors become one vector per text."""

    texts: tuple[str, ...]
    pooling: Literal["mean", "cls"] = "mean"
