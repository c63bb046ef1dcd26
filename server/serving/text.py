"""Text generation for every protocol: render, check limits, run on the engine, collect choices.

`TextService.generate` is the one entry every caller of a text request uses (the HTTP pipeline,
api/pipeline.py, and the batch runner, batch/jobs.py): it resolves the fine-tune, prepares the prompt
and starts the engine's deltas under the request's deadline, telling the request's record (metrics,
log line: server/records.py) what it resolved and every delta it passes on.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from server import errors
from server.config import ModelConfig
from server.engine.types import Adapter, GenerationParams, TextDelta, TextEngine
from server.lifecycle import Deadline
from server.serving.admission import Admission
from server.serving.engine_errors import engine_errors, ensure_ready
from server.serving.finetunes import Finetunes
from server.serving.prompts import render_prompt
from server.serving.requests import TextRequest, ToolCall
from server.serving.sampling import engine_choices, generation_params
from server.serving.tool_calls import ToolDelta, read_calls
from server.serving.tool_prompt import call_schema


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


@dataclass
class Choice:
    index: int
    text: str = ""
    completion_tokens: int = 0
    finish_reason: str | None = None
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)  # then `text` is empty


@dataclass
class Completion:
    choices: list[Choice]
    prompt_tokens: int
    cached_tokens: int = 0

    @property
    def completion_tokens(self) -> int:
        return sum(choice.completion_tokens for choice in self.choices)


class RunRecord(Protocol):
    """What a text request's run tells its record (server/records.py) as it goes."""

    request_id: str  # also the engine request's id

    def use_adapter(self, name: str) -> None: ...

    def show_input(self, sent: Any) -> None: ...

    def watch(self, deltas: AsyncIterator[TextDelta]) -> AsyncIterator[TextDelta]: ...


@dataclass
class Generation:
    """A request on its way: the prepared prompt, and its deltas as the engine makes them (read
    `deltas`, or `completion()` for the whole answer)."""

    prepared: PreparedText
    deltas: AsyncIterator[TextDelta]

    async def completion(self) -> Completion:
        return await collect(self.prepared, self.deltas)


class TextService:
    """One served text model: the public name's config and the engine behind it."""

    def __init__(self, model: ModelConfig, engine: TextEngine, adapters: Finetunes):
        self.model = model
        self.engine = engine
        self.adapters = adapters
        self.admission = Admission(
            model.engine.max_num_seqs, model.max_waiting_requests, model.max_waiting_prompt_tokens
        )

    async def generate(
        self, request: TextRequest, requested_model: str, record: RunRecord, deadline: Deadline
    ) -> Generation:
        """Run `request` on this model for `record`: the fine-tune its `lora` names (errors name the
        model as the client called it, `requested_model`), the prompt rendered and checked, and the
        engine's deltas, each awaited under `deadline` and counted by `record`."""
        adapter = await self._adapter_for(request, requested_model)
        if adapter is not None:
            record.use_adapter(adapter.name)
        record.show_input(request.as_sent)
        prepared = await self._prepare(request, adapter)
        deltas = record.watch(deadline.within(self._stream(prepared, record.request_id)))
        return Generation(prepared, deltas)

    async def count_prompt_tokens(self, request: TextRequest) -> int:
        """The tokens `request`'s prompt takes after the chat template (tools included), as a run of it
        would count them, without running it."""
        ensure_ready(self.engine)
        with engine_errors():
            return len(await self.engine.with_tokenizer(render_prompt, request))

    async def _adapter_for(self, request: TextRequest, requested_model: str) -> Adapter | None:
        """The fine-tune a request's `lora` names: 405 / 5005 when this model has LoRA off, 400 / 3041
        when there is no such fine-tune; errors name the model as the client called it."""
        if request.lora is None:
            return None
        return await self.adapters.adapter_for(requested_model, request.lora)

    async def _prepare(self, request: TextRequest, adapter: Adapter | None = None) -> PreparedText:
        """Render and check `request`."""
        ensure_ready(self.engine)
        # Tokenizing a long prompt takes a while; keep the event loop free for other requests.
        with engine_errors():
            prompt_token_ids = await self.engine.with_tokenizer(render_prompt, request)
        if not prompt_token_ids:
            raise errors.bad_input("the prompt is empty after rendering", param="messages")
        # With tools, the answer is decoded as a call or text (serving/tool_prompt.py).
        output = call_schema(request.tools) if request.tools is not None and request.tools.active else request.output
        params = generation_params(request.sampling, output, self.model, request.options.background)
        requested = len(prompt_token_ids) + params.max_tokens
        if requested > self.model.context_window:
            too_long = "prompt" if request.prompt is not None else "messages"
            raise errors.context_window_exceeded(
                requested, self.model.context_window, too_long, prompt_tokens=len(prompt_token_ids)
            )
        params, copies = engine_choices(params)
        return PreparedText(request, prompt_token_ids, params, copies, adapter)

    def _stream(self, prepared: PreparedText, request_id: str) -> AsyncGenerator[TextDelta, None]:
        """Deltas as the engine makes them, one index per client choice (with tools, read back as
        text and calls: ToolDelta); closing this early aborts the engine request, whose id is
        `request_id` (the `cf-ai-req-id` the client sees). 429 before the engine sees it when the
        model has no place for it (serving/admission.py)."""
        deltas = self._generate(prepared, request_id)
        tools = prepared.request.tools
        return read_calls(deltas, tools) if tools is not None and tools.active else deltas

    async def _generate(self, prepared: PreparedText, request_id: str) -> AsyncGenerator[TextDelta, None]:
        prompt_tokens, reject_if_busy = len(prepared.prompt_token_ids), prepared.request.options.reject_if_busy
        with self.admission.admit(prompt_tokens, reject_if_busy) as place, engine_errors():
            deltas = self.engine.generate(prepared.prompt_token_ids, prepared.params, request_id, prepared.adapter)
            async with aclosing(deltas):
                async for delta in deltas:
                    place.started()
                    if prepared.copies == 1:
                        yield delta
                        continue
                    for copy in range(prepared.copies):
                        yield replace(delta, index=delta.index * prepared.copies + copy)


async def collect(prepared: PreparedText, deltas: AsyncIterator[TextDelta]) -> Completion:
    """A whole answer from its deltas: every choice's text, tokens, finish reason and logprobs."""
    choices = [Choice(index) for index in range(prepared.choices)]
    completion = Completion(choices, prompt_tokens=len(prepared.prompt_token_ids))
    async for delta in deltas:
        choice = choices[delta.index]
        choice.text += delta.text
        choice.completion_tokens = delta.completion_tokens
        choice.finish_reason = delta.finish_reason or choice.finish_reason
        choice.logprobs += delta.logprobs
        if isinstance(delta, ToolDelta):
            choice.tool_calls += delta.calls
        completion.cached_tokens = delta.cached_tokens
    return completion
