"""What the GPU check serves: its run config, the model folder and seeded random-weight LoRA adapters.

The run config is the given config's first model with what the check needs on top: its chat template by
absolute path, LoRA on for the adapters, and, when wai and `vllm serve` share one GPU for the comparison,
half the memory share each. A rehearsal (scripts/gpu_check.py --rehearse) serves the same config on this
machine's CPU with Llama 3's tokenizer on a tiny architecture, still with random weights.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

# The adapters of the LoRA series: rank 16 on the attention projections, random A and B from a seed (B not
# zero, so each adapter changes the answers and the engine really applies it).
ADAPTER_RANK = 16
ADAPTER_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
ADAPTER_SEED = 20260601
ADAPTER_COUNT = 4
# SmolLM2-135M's shapes: an adapter made for another base model, which wai must refuse.
SMOLLM2_135M = {
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
}


def is_random_weights(config_path: Path) -> bool:
    """Whether the config's first model serves made-up weights (vLLM's `load_format: dummy`)."""
    import yaml

    model = yaml.safe_load(config_path.read_text())["models"][0]
    return ((model.get("engine") or {}).get("extra") or {}).get("load_format") == "dummy"


def write_run_config(
    config_path: Path, checkpoint: Path, out: Path, rehearse: bool, halve_memory: bool, max_streams: int
) -> Path:
    """The config wai serves during the check, and whose engine arguments `vllm serve` gets too."""
    import yaml

    data = yaml.safe_load(config_path.read_text())
    model = data["models"][0]
    if model.get("chat_template"):
        model["chat_template"] = str((config_path.parent / model["chat_template"]).resolve())
    model["weights"] = {"path": str(checkpoint)}
    engine = model.setdefault("engine", {})
    if rehearse:
        # On a CPU: the CPU engine's settings, a small cache, no graphs; still random weights.
        for gpu_only in ("gpu_memory_utilization", "enable_prefix_caching"):
            engine.pop(gpu_only, None)
        engine.update(dtype="float32", kv_cache_gib=0.25, enforce_eager=True, max_num_seqs=max(max_streams, 8))
        # The worker in the engine core's process: one Python process fewer to start per server.
        engine.setdefault("extra", {}).update(load_format="dummy", distributed_executor_backend="uni")
    elif halve_memory:
        engine["gpu_memory_utilization"] = round(float(engine.get("gpu_memory_utilization") or 0.9) / 2, 3)
    lora = model.setdefault("lora", {})
    lora.update(enabled=True, max_loras=max(int(lora.get("max_loras") or 1), ADAPTER_COUNT))
    lora["max_rank"] = max(int(lora.get("max_rank") or ADAPTER_RANK), ADAPTER_RANK)
    lora["max_cpu_loras"] = max(int(lora.get("max_cpu_loras") or 1), lora["max_loras"] + 1)
    data["models"] = [model]
    data["batch"] = {"db_path": str(out / "batch.sqlite3")}
    path = out / "run-config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def rehearsal_model(checkpoint: Path, dest: Path) -> Path:
    """The prepared model folder's tokenizer with the tiny Llama 3 architecture of `wai prepare`'s test model,
    and no weights: what a CPU serves quickly in the check's place."""
    from server.llama3_checkpoints import TINY_LLAMA3_CONFIG

    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(checkpoint, dest, ignore=shutil.ignore_patterns("*.safetensors", ".wai-prepared"))
    (dest / "config.json").write_text(json.dumps(TINY_LLAMA3_CONFIG, indent=2) + "\n")
    return dest


def build_adapter(base: dict[str, Any], folder: Path, seed: int, rank: int = ADAPTER_RANK) -> Path:
    """PEFT's two files for a LoRA adapter on `base`'s attention projections, random from `seed`, in bfloat16.

    lora_A is [rank, in] and lora_B is [out, rank] for each projection's [out, in] (server/serving/lora_checks.py).
    """
    import torch
    from safetensors.torch import save_file

    hidden, heads = base["hidden_size"], base["num_attention_heads"]
    head_dim = base.get("head_dim") or hidden // heads
    kv = base.get("num_key_value_heads", heads) * head_dim
    shapes = {  # [out, in]
        "q_proj": (heads * head_dim, hidden),
        "k_proj": (kv, hidden),
        "v_proj": (kv, hidden),
        "o_proj": (hidden, heads * head_dim),
    }
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(base["num_hidden_layers"]):
        for module in ADAPTER_MODULES:
            out_features, in_features = shapes[module]
            name = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{name}.lora_A.weight"] = torch.randn(rank, in_features, generator=generator) * 0.01
            tensors[f"{name}.lora_B.weight"] = torch.randn(out_features, rank, generator=generator) * 0.01
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in tensors.items()}, folder / "adapter_model.safetensors")
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": rank,
        "lora_alpha": 2 * rank,
        "lora_dropout": 0.0,
        "bias": "none",
        "target_modules": list(ADAPTER_MODULES),
        "base_model_name_or_path": None,
        "wai_random_seed": seed,  # random weights: says so, and how to make them again
    }
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return folder


def build_adapters(checkpoint: Path, dest: Path) -> dict[str, Path]:
    """ADAPTER_COUNT adapters shaped for the model in `checkpoint`, and one shaped for SmolLM2 (to be refused)."""
    base = json.loads((checkpoint / "config.json").read_text())
    if dest.exists():
        shutil.rmtree(dest)
    adapters = {f"lora-{i}": build_adapter(base, dest / f"lora-{i}", ADAPTER_SEED + i) for i in range(ADAPTER_COUNT)}
    adapters["smollm2-shaped"] = build_adapter(SMOLLM2_135M, dest / "smollm2-shaped", ADAPTER_SEED, rank=8)
    return adapters
