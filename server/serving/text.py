"""Text generation for every protocol: render, check limits, run on the engine, count usage."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from server import errors
from server.config import ModelConfig
from server.engine.types import GenerationParams, TextDelta
from server.engine.vllm_engine import EngineRejected, EngineUnavailable, TextEngine
from server.serving.prompts import render_prompt
from server.serving.requests import TextRequest
from server.serving.sampling import generation_params


@dataclass(frozen=True)
class PreparedText:
    """A request that passed every check and is ready for the engine."""

    request: TextRequest
    prompt_token_ids: list[int]
    params: GenerationParams


@dataclass
class Choice:
    index: int
    text: str = ""
    completion_tokens: int = 0
    finish_reason: str | None = None


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

    def __init__(self, model: ModelConfig, engine: TextEngine):
        self.model = model
        self.engine = engine

    async def prepare(self, request: TextRequest, requested_model: str) -> PreparedText:
        """Render and check `request`; errors name the model as the client called it."""
        if not self.engine.is_ready():
            raise errors.capacity_exceeded(status=503, retry_after_s=5)
        if request.lora is not None:
            raise errors.lora_not_supported(requested_model)
        # Tokenizing a long prompt takes a while; keep the event loop free for other requests.
        prompt_token_ids = await self.engine.with_tokenizer(render_prompt, request)
        if not prompt_token_ids:
            raise errors.bad_input("the prompt is empty after rendering", param="messages")
        params = generation_params(request.sampling, request.output, self.model.default_max_tokens)
        requested = len(prompt_token_ids) + params.max_tokens
        if requested > self.model.context_window:
            raise errors.context_window_exceeded(requested, self.model.context_window)
        return PreparedText(request, prompt_token_ids, params)

    async def stream(self, prepared: PreparedText, request_id: str) -> AsyncIterator[TextDelta]:
        """Deltas as the engine makes them; closing this early aborts the engine request."""
        try:
            async for delta in self.engine.generate(prepared.prompt_token_ids, prepared.params, request_id):
                yield delta
        except EngineUnavailable as exc:
            raise errors.capacity_exceeded(status=503, retry_after_s=5) from exc
        except EngineRejected as exc:
            raise errors.bad_input(str(exc)) from exc

    async def open_stream(self, prepared: PreparedText, request_id: str) -> AsyncIterator[TextDelta]:
        """Start generating and wait for the first delta, so that a request the engine refuses
        still gets a proper error status instead of a broken 200 stream."""
        stream = self.stream(prepared, request_id)
        first = await anext(stream)
        return _prepend(first, stream)

    async def complete(self, prepared: PreparedText, request_id: str) -> Completion:
        choices = [Choice(index) for index in range(prepared.params.n)]
        completion = Completion(choices, prompt_tokens=len(prepared.prompt_token_ids))
        async for delta in self.stream(prepared, request_id):
            choice = choices[delta.index]
            choice.text += delta.text
            choice.completion_tokens = delta.completion_tokens
            choice.finish_reason = delta.finish_reason or choice.finish_reason
            completion.cached_tokens = delta.cached_tokens
        return completion


async def _prepend(first: TextDelta, rest: AsyncIterator[TextDelta]) -> AsyncIterator[TextDelta]:
    yield first
    async for delta in rest:
        yield delta
