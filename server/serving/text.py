"""Text generation for every protocol: render, check limits, run on the engine, count usage."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from server import errors
from server.config import ModelConfig
from server.engine.types import Adapter, GenerationParams, TextDelta
from server.engine.vllm_engine import AdapterLoadFailed, EngineRejected, EngineUnavailable, TextEngine
from server.records import RequestRecord
from server.serving.lora import AdapterStore
from server.serving.prompts import render_prompt
from server.serving.requests import TextRequest
from server.serving.sampling import engine_choices, generation_params


@dataclass(frozen=True)
class PreparedText:
    """A request that passed every check and is ready for the engine."""

    request: TextRequest
    prompt_token_ids: list[int]
    params: GenerationParams  # as the engine runs them
    copies: int = 1  # each engine choice answers this many of the client's choices
    adapter: Adapter | None = None

    @property
    def choices(self) -> int:
        return self.params.n * self.copies

    @property
    def adapter_name(self) -> str | None:
        return self.adapter.name if self.adapter is not None else None


@dataclass
class Choice:
    index: int
    text: str = ""
    completion_tokens: int = 0
    finish_reason: str | None = None
    logprobs: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Completion:
    choices: list[Choice]
    prompt_tokens: int
    cached_tokens: int = 0

    @property
    def completion_tokens(self) -> int:
        return sum(choice.completion_tokens for choice in self.choices)


class TextService:
    """One served text model: the public name's config and the engine behind it."""

    def __init__(self, model: ModelConfig, engine: TextEngine, adapters: AdapterStore):
        self.model = model
        self.engine = engine
        self.adapters = adapters

    async def prepare(self, request: TextRequest, requested_model: str) -> PreparedText:
        """Render and check `request`; errors name the model as the client called it."""
        if not self.engine.is_ready():
            raise errors.capacity_exceeded(status=503, retry_after_s=5)
        adapter = None
        if request.lora is not None:
            # 405 / 5005 when this model has LoRA off; an unknown fine-tune is the client's 400.
            adapter = self.adapters.adapter_for(requested_model, request.lora)
        # Tokenizing a long prompt takes a while; keep the event loop free for other requests.
        prompt_token_ids = await self.engine.with_tokenizer(render_prompt, request)
        if not prompt_token_ids:
            raise errors.bad_input("the prompt is empty after rendering", param="messages")
        params = generation_params(request.sampling, request.output, self.model.default_max_tokens)
        requested = len(prompt_token_ids) + params.max_tokens
        if requested > self.model.context_window:
            raise errors.context_window_exceeded(requested, self.model.context_window)
        params, copies = engine_choices(params)
        return PreparedText(request, prompt_token_ids, params, copies, adapter)

    async def stream(self, prepared: PreparedText, record: RequestRecord) -> AsyncIterator[TextDelta]:
        """Deltas as the engine makes them, counted by `record`; closing this early aborts the engine
        request. The engine request id is the record's (the `cf-ai-req-id` the client sees)."""
        async for delta in record.watch(self._generate(prepared, record.request_id)):
            yield delta

    async def _generate(self, prepared: PreparedText, request_id: str) -> AsyncIterator[TextDelta]:
        try:
            async for delta in self.engine.generate(prepared.prompt_token_ids, prepared.params, request_id,
                                                    prepared.adapter):
                if prepared.copies == 1:
                    yield delta
                    continue
                for copy in range(prepared.copies):
                    yield replace(delta, index=delta.index * prepared.copies + copy)
        except AdapterLoadFailed as exc:
            raise errors.finetune_failed_to_load(str(exc)) from exc
        except EngineUnavailable as exc:
            raise errors.capacity_exceeded(status=503, retry_after_s=5) from exc
        except EngineRejected as exc:
            raise errors.bad_input(str(exc)) from exc

    async def open_stream(self, prepared: PreparedText, record: RequestRecord) -> AsyncIterator[TextDelta]:
        """Start generating and wait for the first delta, so that a request the engine refuses
        still gets a proper error status instead of a broken 200 stream."""
        stream = self.stream(prepared, record)
        first = await anext(stream)
        return _prepend(first, stream)

    async def complete(self, prepared: PreparedText, record: RequestRecord) -> Completion:
        choices = [Choice(index) for index in range(prepared.choices)]
        completion = Completion(choices, prompt_tokens=len(prepared.prompt_token_ids))
        async for delta in self.stream(prepared, record):
            choice = choices[delta.index]
            choice.text += delta.text
            choice.completion_tokens = delta.completion_tokens
            choice.finish_reason = delta.finish_reason or choice.finish_reason
            choice.logprobs += delta.logprobs
            completion.cached_tokens = delta.cached_tokens
        return completion


async def _prepend(first: TextDelta, rest: AsyncIterator[TextDelta]) -> AsyncIterator[TextDelta]:
    yield first
    async for delta in rest:
        yield delta
