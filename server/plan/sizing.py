"""`wai plan`'s maths: what a model needs of a GPU's memory, and what then fits.

A model's weights, LoRA slots and KV cache in a GPU's memory, the tokens and sequences that fit,
and the decode ceiling memory bandwidth allows.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from server.config import ModelConfig, Settings
from server.plan.data import (
    DTYPE_BYTES,
    FP8_KV_CACHE,
    FP8_QUANTIZATIONS,
    GIB,
    GPUS,
    KNOWN_MODELS,
    PUBLISHED,
    TB,
    Architecture,
    Gpu,
    PlanError,
)

# What vLLM does not give the KV cache, per GPU, beyond the weights and the LoRA slots: the activation
# peak of its profiling forward pass (~1.3 GiB for an 8B model at 8,192 batched tokens: the MLP's
# 8,192 x 28,672 intermediate and the sampler's logits), CUDA graphs (~0.5 GiB), the CUDA context,
# cuBLAS workspaces and NCCL buffers (~0.5 GiB), and the part of a card's nominal memory that CUDA
# does not expose (an H200 sold as 141 GB shows 140.4 GiB). An estimate: vLLM measures the real
# figure at start and logs it as "Available KV cache memory".
RESERVE_GIB = 3.0
# vLLM's own default when a config leaves gpu_memory_utilization out (CacheConfig, vLLM 0.32).
VLLM_DEFAULT_GPU_MEMORY_UTILIZATION = 0.92


def architecture_of(model: ModelConfig, cache_dir: Path) -> tuple[Architecture, str, str | None]:
    """The model's architecture, where it was read from, and the KNOWN_MODELS key it matches."""
    if model.weights.recipe is not None:
        from server.prepare import PrepareError, resolve_checkpoint  # only for packaged models

        try:
            folder = Path(resolve_checkpoint(model, cache_dir))
        except PrepareError as exc:
            raise PlanError(str(exc)) from exc
        return read_config_json(folder), f"{folder}/config.json", None
    path = model.weights.path or ""
    known = Path(path).name.lower()
    if (Path(path) / "config.json").is_file():
        return read_config_json(Path(path)), f"{path}/config.json", known if known in KNOWN_MODELS else None
    if known in KNOWN_MODELS:
        return KNOWN_MODELS[known], f"wai's table of known models ({Path(path).name})", known
    raise PlanError(f"{model.name}: {path} has no config.json here, and its architecture is not in wai's table")


def read_config_json(folder: Path) -> Architecture:
    try:
        return Architecture.from_config_json(json.loads((folder / "config.json").read_text()))
    except (OSError, ValueError) as exc:
        raise PlanError(f"cannot read {folder}/config.json: {exc}") from exc


def dtype_bytes(dtype: str, architecture: Architecture) -> int:
    name = architecture.dtype if dtype == "auto" else dtype
    if name not in DTYPE_BYTES:
        raise PlanError(f"unknown dtype {name!r}")
    return DTYPE_BYTES[name]


def plan_model(
    model: ModelConfig,
    architecture: Architecture,
    gpu: Gpu,
    gpus: int,
    prompt_tokens: int,
    output_tokens: int,
) -> dict[str, Any]:
    """The plan for one text model; every size in bytes, with GiB beside the large ones."""
    engine, arch = model.engine, architecture
    if prompt_tokens < 1 or output_tokens < 1 or gpus < 1:
        raise PlanError("prompt tokens, output tokens and GPUs must be at least 1")
    value_bytes = dtype_bytes(engine.dtype, arch)
    quantization = engine.extra.get("quantization")
    if quantization is not None and quantization not in FP8_QUANTIZATIONS:
        raise PlanError(
            f"{model.name}: the plan knows FP8 ({', '.join(sorted(FP8_QUANTIZATIONS))}), not {quantization}"
        )
    fp8_weights = quantization is not None
    kv_cache_dtype = engine.extra.get("kv_cache_dtype", "auto")
    model_dtype = arch.dtype if engine.dtype == "auto" else engine.dtype
    if kv_cache_dtype in FP8_KV_CACHE:
        kv_value_bytes, kv_cache_dtype = 1, "fp8"
    elif kv_cache_dtype == "auto":  # the model's dtype, even when its weights are FP8
        kv_value_bytes, kv_cache_dtype = value_bytes, model_dtype
    else:
        kv_value_bytes = dtype_bytes(kv_cache_dtype, arch)

    # FP8 stores the decoder's matrices in one byte each; embeddings, the head and norms keep the dtype.
    weights_bytes = arch.linear_parameters * (1 if fp8_weights else value_bytes) + arch.other_parameters * value_bytes
    lora_bytes = (
        arch.lora_slot_bytes(model.lora.max_rank, value_bytes) * model.lora.max_loras if model.lora.enabled else 0
    )
    kv_bytes_per_token = 2 * arch.num_hidden_layers * arch.num_key_value_heads * arch.head_dim * kv_value_bytes

    utilization = engine.gpu_memory_utilization or VLLM_DEFAULT_GPU_MEMORY_UTILIZATION
    if engine.kv_cache_gib is not None:  # a fixed cache size: vLLM then ignores the utilization
        kv_cache_bytes = int(engine.kv_cache_gib * GIB)
        needed = weights_bytes + lora_bytes + kv_cache_bytes + RESERVE_GIB * GIB * gpus
        fits = needed <= gpu.memory_gib * GIB * gpus
    else:
        budget = gpu.memory_gib * GIB * utilization * gpus
        kv_cache_bytes = max(0, int(budget - weights_bytes - lora_bytes - RESERVE_GIB * GIB * gpus))
        fits = kv_cache_bytes > 0
    kv_cache_tokens = kv_cache_bytes // kv_bytes_per_token

    tokens_per_sequence = prompt_tokens + output_tokens
    kv_concurrency = kv_cache_tokens // tokens_per_sequence
    concurrency = min(kv_concurrency, engine.max_num_seqs)
    bound = "kv_cache" if kv_concurrency < engine.max_num_seqs else "max_num_seqs"
    max_model_len = engine.max_model_len or arch.max_position_embeddings
    notes = []
    if not fits:
        notes.append("does not fit: the weights and the reserve take all the memory vLLM may use")
    elif kv_cache_tokens < max_model_len:
        notes.append(
            f"vLLM refuses to start: the KV cache holds {kv_cache_tokens} tokens, less than one {max_model_len}"
        )
    if tokens_per_sequence > max_model_len:
        notes.append(f"prompt + output ({tokens_per_sequence}) is longer than max_model_len ({max_model_len})")

    plan: dict[str, Any] = {
        "name": model.name,
        "architecture": {**asdict(arch), "parameters": arch.parameters},
        "weights_dtype": "fp8" if fp8_weights else model_dtype,
        "kv_cache_dtype": kv_cache_dtype,
        "weights_bytes": weights_bytes,
        "weights_gib": round(weights_bytes / GIB, 2),
        "lora_slots_bytes": lora_bytes,
        "kv_bytes_per_token": kv_bytes_per_token,
        "gpu_memory_utilization": None if engine.kv_cache_gib is not None else utilization,
        "reserve_gib_per_gpu": RESERVE_GIB,
        "kv_cache_bytes": kv_cache_bytes,
        "kv_cache_gib": round(kv_cache_bytes / GIB, 2),
        "kv_cache_tokens": kv_cache_tokens,
        "tokens_per_sequence": tokens_per_sequence,
        "kv_concurrency": kv_concurrency,
        "max_num_seqs": engine.max_num_seqs,
        "concurrency": concurrency,
        "concurrency_bound": bound,
        "fits": fits,
        "notes": notes,
        "estimate": decode_estimate(
            gpu, gpus, weights_bytes, kv_bytes_per_token, prompt_tokens, output_tokens, concurrency
        ),
    }
    return plan


def decode_estimate(
    gpu: Gpu,
    gpus: int,
    weights_bytes: int,
    kv_bytes_per_token: int,
    prompt_tokens: int,
    output_tokens: int,
    concurrency: int,
) -> dict[str, Any] | None:
    """The decode ceiling memory bandwidth allows: each step reads every weight once, and each
    sequence's KV cache at its mean length over the answer (prompt + output/2). It leaves out
    compute, prefill, tensor-parallel communication and the scheduler, so real figures are lower."""
    if gpu.bandwidth_tb_s is None:
        return None
    bandwidth = gpu.bandwidth_tb_s * TB * gpus
    kv_read = kv_bytes_per_token * (prompt_tokens + output_tokens / 2)
    batch1 = bandwidth / (weights_bytes + kv_read)
    batch = max(concurrency, 1)
    per_sequence = bandwidth / (weights_bytes + batch * kv_read)
    return {
        "decode_tokens_per_s_batch1": round(batch1, 1),
        "decode_tokens_per_s_per_sequence": round(per_sequence, 1),
        "decode_tokens_per_s_aggregate": round(per_sequence * batch),
        "at_concurrency": batch,
        "bandwidth_tb_per_s": round(gpu.bandwidth_tb_s * gpus, 3),
    }


def published_for(known: str | None, gpu: Gpu, gpus: int, fp8_weights: bool) -> list[dict[str, Any]]:
    return [
        asdict(p)
        for p in PUBLISHED
        if p.model == known and GPUS.get(p.gpu) == gpu and p.gpus == gpus and p.fp8_weights == fp8_weights
    ]


def make_plan(
    settings: Settings, gpu: Gpu, prompt_tokens: int, output_tokens: int, gpus: int | None = None
) -> dict[str, Any]:
    models = []
    for model in settings.models:
        if model.task != "text-generation":
            continue
        count = gpus or model.engine.tensor_parallel_size
        architecture, source, known = architecture_of(model, settings.cache_dir)
        plan = plan_model(model, architecture, gpu, count, prompt_tokens, output_tokens)
        plan["architecture"]["source"] = source
        plan["gpus"] = count
        plan["published"] = published_for(known, gpu, count, plan["weights_dtype"] == "fp8")
        models.append(plan)
    return {
        "gpu": asdict(gpu),
        "prompt_tokens": prompt_tokens,
        "output_tokens": output_tokens,
        "models": models,
    }
