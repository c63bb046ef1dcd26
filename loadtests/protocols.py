"""The wire formats a target can speak: one small class each, all wire details live here.

Each protocol knows its request URL and body, how to read one server-sent event (text, usage,
error) and how to read an error body into a code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from loadtests.prompts import Prompt


@dataclass(frozen=True)
class Target:
    """One server under test."""

    label: str
    url: str
    protocol: str  # a key of PROTOCOLS
    model: str
    api_key: str | None = None


@dataclass(frozen=True)
class Sampling:
    temperature: float | None = 0.0  # greedy by default: the same prompt gives every target the same output
    seed: int | None = None
    ignore_eos: bool = False  # vLLM's OpenAI extension: always generate max_tokens


@dataclass
class Event:
    """What one server-sent event carried."""

    text: str = ""
    token: bool = False  # carried generated output (possibly a token with no visible text)
    usage: dict[str, Any] | None = None
    error: tuple[str, str] | None = None  # (code, message)
    done: bool = False


def _v1_endpoint(url: str, route: str) -> str:
    """`/v1/<route>` from a server root, an SDK base URL (ending in `/v1`) or the full URL."""
    url = url.rstrip("/")
    if url.endswith(f"/{route}"):
        return url
    return f"{url}/{route}" if url.endswith("/v1") else f"{url}/v1/{route}"


def _json(data: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


class WorkersAI:
    """`POST .../accounts/{id}/ai/run/{model}` with `stream: true`: `{"response": ...}` events."""

    name = "workers-ai"
    account = "loadtest"

    def endpoint(self, url: str, model: str) -> str:
        """The run URL from a server root, an API base (`.../client/v4`), an `.../ai` base or a full URL."""
        url = url.rstrip("/")
        if "/ai/run/" in url:
            return url
        if url.endswith("/ai"):
            return f"{url}/run/{model}"
        if url.endswith("/client/v4"):
            return f"{url}/accounts/{self.account}/ai/run/{model}"
        return f"{url}/client/v4/accounts/{self.account}/ai/run/{model}"

    def body(self, prompt: Prompt, model: str, sampling: Sampling) -> dict[str, Any]:
        body: dict[str, Any] = {"messages": prompt.messages, "max_tokens": prompt.max_tokens, "stream": True}
        if prompt.lora is not None:
            body["lora"] = prompt.lora
        if sampling.temperature is not None:
            body["temperature"] = sampling.temperature
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        return body

    def parse(self, data: str) -> Event:
        if data == "[DONE]":
            return Event(done=True)
        event = _json(data)
        if not isinstance(event, dict):
            return Event(error=("bad_event", data[:200]))
        if event.get("success") is False or event.get("errors"):
            return Event(error=_envelope_error(event))
        text = event.get("response")
        text = text if isinstance(text, str) else ""
        return Event(text=text, token=bool(text), usage=event.get("usage"))

    def error(self, body: bytes) -> tuple[str, str]:
        event = _json(body.decode(errors="replace"))
        if isinstance(event, dict) and event.get("errors"):
            return _envelope_error(event)
        return "", body[:200].decode(errors="replace")


class OpenAIChat:
    """`POST .../chat/completions` with `stream: true` and `stream_options.include_usage`."""

    name = "openai"

    def endpoint(self, url: str, model: str) -> str:
        return _v1_endpoint(url, "chat/completions")

    def body(self, prompt: Prompt, model: str, sampling: Sampling) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": prompt.lora or model,
            "messages": prompt.messages,
            "max_tokens": prompt.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if sampling.temperature is not None:
            body["temperature"] = sampling.temperature
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.ignore_eos:
            body["ignore_eos"] = True
        return body

    def parse(self, data: str) -> Event:
        if data == "[DONE]":
            return Event(done=True)
        chunk = _json(data)
        if not isinstance(chunk, dict):
            return Event(error=("bad_event", data[:200]))
        if "error" in chunk or chunk.get("object") == "error":
            return Event(error=_openai_error(chunk))
        # A chunk with a choice carries output even when its text is empty (the role chunk vLLM sends
        # with the first token, or a token that decodes to nothing): `vllm bench serve` counts those too.
        choices = chunk.get("choices") or []
        text = "".join((choice.get("delta") or {}).get("content") or "" for choice in choices)
        return Event(text=text, token=bool(choices), usage=chunk.get("usage"))

    def error(self, body: bytes) -> tuple[str, str]:
        chunk = _json(body.decode(errors="replace"))
        if isinstance(chunk, dict):
            return _openai_error(chunk)
        return "", body[:200].decode(errors="replace")


class AnthropicMessages:
    """`POST .../v1/messages` with `stream: true`: Anthropic's typed events; text in `text_delta`s, the
    usage in `message_delta`, the end at `message_stop`."""

    name = "anthropic"

    def endpoint(self, url: str, model: str) -> str:
        return _v1_endpoint(url, "messages")

    def body(self, prompt: Prompt, model: str, sampling: Sampling) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": prompt.lora or model,
            "messages": [m for m in prompt.messages if m["role"] != "system"],
            "max_tokens": prompt.max_tokens,
            "stream": True,
        }
        system = "".join(m["content"] for m in prompt.messages if m["role"] == "system")
        if system:
            body["system"] = system
        if sampling.temperature is not None:
            body["temperature"] = min(sampling.temperature, 1.0)  # Anthropic's range is 0..1
        return body

    def parse(self, data: str) -> Event:
        event = _json(data)
        if not isinstance(event, dict):
            return Event(error=("bad_event", data[:200]))
        kind = event.get("type")
        if kind == "error":
            return Event(error=_anthropic_error(event))
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            return Event(text=delta.get("text") or "", token=True)
        if kind == "message_delta":
            spent = event.get("usage") or {}
            prompt = (spent.get("input_tokens") or 0) + (spent.get("cache_read_input_tokens") or 0)
            return Event(usage={"prompt_tokens": prompt or None, "completion_tokens": spent.get("output_tokens")})
        return Event(done=kind == "message_stop")

    def error(self, body: bytes) -> tuple[str, str]:
        event = _json(body.decode(errors="replace"))
        if isinstance(event, dict) and event.get("type") == "error":
            return _anthropic_error(event)
        return "", body[:200].decode(errors="replace")


class OpenAIResponses:
    """`POST .../v1/responses` with `stream: true`: the typed events; text in `response.output_text.delta`,
    the usage in `response.completed`, which ends the stream. Nothing is stored (`store: false`)."""

    name = "responses"

    def endpoint(self, url: str, model: str) -> str:
        return _v1_endpoint(url, "responses")

    def body(self, prompt: Prompt, model: str, sampling: Sampling) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": prompt.lora or model,
            "input": prompt.messages,
            "max_output_tokens": prompt.max_tokens,
            "stream": True,
            "store": False,
        }
        if sampling.temperature is not None:
            body["temperature"] = sampling.temperature
        return body

    def parse(self, data: str) -> Event:
        event = _json(data)
        if not isinstance(event, dict):
            return Event(error=("bad_event", data[:200]))
        kind = event.get("type")
        if kind == "error" or kind == "response.failed":
            return Event(error=(str(event.get("code", "")), str(event.get("message", ""))))
        if kind == "response.output_text.delta":
            return Event(text=event.get("delta") or "", token=True)
        if kind == "response.function_call_arguments.delta":
            return Event(token=True)
        if kind == "response.completed":
            spent = (event.get("response") or {}).get("usage") or {}
            usage = {"prompt_tokens": spent.get("input_tokens"), "completion_tokens": spent.get("output_tokens")}
            return Event(usage=usage, done=True)
        return Event()

    def error(self, body: bytes) -> tuple[str, str]:
        chunk = _json(body.decode(errors="replace"))
        if isinstance(chunk, dict):
            return _openai_error(chunk)
        return "", body[:200].decode(errors="replace")


def _anthropic_error(event: dict[str, Any]) -> tuple[str, str]:
    error = event.get("error")
    if not isinstance(error, dict):
        return "", str(error)
    return str(error.get("type", "")), str(error.get("message", ""))


def _envelope_error(event: dict[str, Any]) -> tuple[str, str]:
    first = (event.get("errors") or [{}])[0]
    return str(first.get("code", "")), str(first.get("message", ""))


def _openai_error(chunk: dict[str, Any]) -> tuple[str, str]:
    error = chunk.get("error", chunk)
    if not isinstance(error, dict):
        return "", str(error)
    code = error.get("code") or error.get("type") or ""
    return str(code), str(error.get("message", ""))


Protocol = WorkersAI | OpenAIChat | OpenAIResponses | AnthropicMessages
PROTOCOLS: dict[str, Protocol] = {
    p.name: p for p in (WorkersAI(), OpenAIChat(), OpenAIResponses(), AnthropicMessages())
}
