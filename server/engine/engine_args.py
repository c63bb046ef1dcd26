"""A model's vLLM engine arguments, one set for every engine built from a config.

wai's own engine, a shared engine core and `vllm serve`'s flags all come from here, so that every
engine built from a config (and every benchmark against vLLM's own server) runs on exactly the same
arguments.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from vllm.engine.arg_utils import AsyncEngineArgs

from server.config import ModelConfig
from server.engine.cpu_env import engine_dtype


def engine_arg_values(model: ModelConfig, checkpoint: str) -> dict[str, Any]:
    """The engine arguments of a model, as AsyncEngineArgs fields."""
    cfg = model.engine
    args: dict[str, Any] = {
        "runner": "pooling" if model.task == "text-embeddings" else "generate",
        "model": checkpoint,
        "served_model_name": [model.name],
        "dtype": engine_dtype(cfg.dtype),
        "max_model_len": cfg.max_model_len,
        "max_num_seqs": cfg.max_num_seqs,
        "enforce_eager": cfg.enforce_eager,
        "tensor_parallel_size": cfg.tensor_parallel_size,
        # Keeps vLLM's own Prometheus metrics up to date. Only for text models: vLLM's Prometheus
        # logger clears every vllm:* series when it starts, so a second engine in the process would
        # wipe the text engine's.
        "disable_log_stats": model.task == "text-embeddings",
        "enable_log_requests": False,
        # Interactive requests go ahead of background ones waiting for the engine (serving/sampling.py).
        "scheduling_policy": "priority",
    }
    if cfg.kv_cache_gib is not None:
        args["kv_cache_memory_bytes"] = int(cfg.kv_cache_gib * 2**30)
    if cfg.gpu_memory_utilization is not None:
        args["gpu_memory_utilization"] = cfg.gpu_memory_utilization
    if cfg.enable_prefix_caching is not None:
        args["enable_prefix_caching"] = cfg.enable_prefix_caching
    if model.lora.enabled:
        # vLLM loads an adapter on its first request (requests for it wait in the queue meanwhile),
        # keeps max_cpu_loras of them and evicts the least recently used beyond that.
        args.update(
            enable_lora=True,
            max_lora_rank=model.lora.max_rank,
            max_loras=model.lora.max_loras,
            max_cpu_loras=model.lora.max_cpu_loras,
        )
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
