"""Checks an uploaded LoRA adapter must pass before it is stored, each with its own clear message.

An adapter is PEFT's two files: `adapter_config.json` and `adapter_model.safetensors`. Weights are
only ever read as safetensors (a header of names, dtypes and shapes); nothing pickled is loaded.
Shapes are checked against the base model's own checkpoint headers, so any architecture works:
for a base weight `<module>.weight` of shape [out, in], `lora_A` is [r, in] and `lora_B` is [out, r].
A Llama checkpoint without weights (served with random ones, `load_format: dummy`) has its shapes
worked out from its config.json instead.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import safe_open

from server.errors import invalid_finetune

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS)

# The hosted service requires one of these when adapter_config.json names a model_type.
HOSTED_MODEL_TYPES = {"llama", "mistral", "gemma"}
# Unquantized float weights only, as the hosted service requires.
FLOAT_DTYPES = {"F16", "BF16", "F32"}
# PEFT's tensor names: base_model.model.<module path>.lora_A.weight
LORA_TENSOR = re.compile(r"^base_model\.model\.(?P<module>[\w.]+)\.lora_(?P<part>[AB])\.weight$")


class BaseModelUnreadable(Exception):
    """A LoRA-enabled model's own checkpoint cannot be read, so adapters cannot be checked against it."""


@dataclass(frozen=True)
class BaseModelShapes:
    """What an adapter is checked against: the base model's linear weights and its model type."""

    model_type: str | None
    linear_weights: dict[str, tuple[int, int]]  # module path -> (out_features, in_features)

    @property
    def module_names(self) -> set[str]:
        """Last path parts (q_proj, down_proj...): the names PEFT's target_modules uses."""
        return {module.rsplit(".", 1)[-1] for module in self.linear_weights}


@dataclass(frozen=True)
class AdapterConfig:
    rank: int
    max_rank: int  # the largest of r and any rank_pattern override
    target_modules: frozenset[str]
    has_rank_pattern: bool


def read_base_model_shapes(checkpoint: Path) -> BaseModelShapes:
    """Read the base checkpoint's safetensors headers (not its weights) and its config.json."""
    files = sorted(checkpoint.glob("*.safetensors"))
    config_file = checkpoint / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    if not files and config.get("model_type") == "llama":
        return BaseModelShapes(model_type="llama", linear_weights=llama_linear_shapes(config))
    if not files:
        raise ValueError(f"LoRA needs a local safetensors checkpoint; found none in {checkpoint}")
    linear: dict[str, tuple[int, int]] = {}
    for file in files:
        with safe_open(file, framework="numpy") as weights:
            for name in weights.keys():  # noqa: SIM118 (safe_open is not a mapping)
                shape = weights.get_slice(name).get_shape()
                if name.endswith(".weight") and len(shape) == 2 and "embed" not in name:
                    linear[name.removesuffix(".weight")] = (shape[0], shape[1])
    return BaseModelShapes(model_type=config.get("model_type"), linear_weights=linear)


def llama_linear_shapes(config: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """A Llama's linear weights, [out, in] by module path, as its safetensors headers would give them."""
    hidden, inner = config["hidden_size"], config["intermediate_size"]
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
    head_dim = config.get("head_dim") or hidden // heads
    per_layer = {
        "self_attn.q_proj": (heads * head_dim, hidden),
        "self_attn.k_proj": (kv_heads * head_dim, hidden),
        "self_attn.v_proj": (kv_heads * head_dim, hidden),
        "self_attn.o_proj": (hidden, heads * head_dim),
        "mlp.gate_proj": (inner, hidden),
        "mlp.up_proj": (inner, hidden),
        "mlp.down_proj": (hidden, inner),
    }
    shapes = {
        f"model.layers.{i}.{module}": shape
        for i in range(config["num_hidden_layers"])
        for module, shape in per_layer.items()
    }
    return {**shapes, "lm_head": (config["vocab_size"], hidden)}


def check_config(raw: bytes, base: BaseModelShapes, max_rank: int) -> AdapterConfig:
    """adapter_config.json: PEFT's LoRA format, within the rank limit, on modules the base model has."""
    try:
        config = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise invalid_finetune(f"adapter_config.json is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise invalid_finetune("adapter_config.json must be a JSON object")
    peft_type = config.get("peft_type", "LORA")
    if peft_type != "LORA":
        raise invalid_finetune(f"adapter_config.json: peft_type {peft_type!r} is not supported; only LORA is")
    rank: Any = config.get("r")
    if not _positive_int(rank):
        raise invalid_finetune("adapter_config.json: 'r' (the LoRA rank) must be a positive integer")
    if not isinstance(config.get("lora_alpha"), int | float) or isinstance(config.get("lora_alpha"), bool):
        raise invalid_finetune("adapter_config.json: 'lora_alpha' must be a number")
    rank_pattern = config.get("rank_pattern") or {}
    if not isinstance(rank_pattern, dict) or not all(_positive_int(r) for r in rank_pattern.values()):
        raise invalid_finetune("adapter_config.json: 'rank_pattern' must map module patterns to positive integers")
    largest = max([rank, *rank_pattern.values()])
    if largest > max_rank:
        raise invalid_finetune(f"adapter_config.json: LoRA rank {largest} is over this model's limit of {max_rank}")
    _check_features(config)
    model_type = config.get("model_type")
    if model_type is not None:
        if model_type not in HOSTED_MODEL_TYPES:
            raise invalid_finetune(
                f"adapter_config.json: model_type {model_type!r} is not one of {', '.join(sorted(HOSTED_MODEL_TYPES))}"
            )
        if base.model_type is not None and model_type != base.model_type:
            raise invalid_finetune(
                f"adapter_config.json: model_type {model_type!r} does not match the base model's {base.model_type!r}"
            )
    targets = _target_modules(config.get("target_modules"), base)
    return AdapterConfig(rank=rank, max_rank=largest, target_modules=targets, has_rank_pattern=bool(rank_pattern))


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_features(config: dict[str, Any]) -> None:
    """PEFT options the engine cannot serve; refusing them now beats failing on the first request."""
    if config.get("use_dora"):
        raise invalid_finetune("adapter_config.json: DoRA (use_dora) is not supported")
    if config.get("bias", "none") != "none":
        raise invalid_finetune("adapter_config.json: LoRA bias is not supported; 'bias' must be 'none'")
    if config.get("modules_to_save"):
        raise invalid_finetune("adapter_config.json: modules_to_save is not supported; only LoRA weights are served")
    if config.get("layer_replication"):
        raise invalid_finetune("adapter_config.json: layer_replication is not supported")


def _target_modules(value: Any, base: BaseModelShapes) -> frozenset[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(m, str) for m in value):
        raise invalid_finetune(
            "adapter_config.json: 'target_modules' must be a non-empty list of module names "
            'such as ["q_proj", "v_proj"]'
        )
    unknown = sorted(set(value) - base.module_names)
    if unknown:
        raise invalid_finetune(
            f"adapter_config.json: target_modules {unknown} do not exist in the base model "
            f"(it has {sorted(base.module_names)})"
        )
    return frozenset(value)


def check_weights(path: Path, base: BaseModelShapes, config: AdapterConfig | None) -> None:
    """adapter_model.safetensors: a valid safetensors file of LoRA pairs that fit the base model.

    Without the config (uploaded second), names, dtypes and the A/B pairing are still checked;
    ranks and target modules are checked as soon as both files are in.
    """
    try:
        with safe_open(path, framework="numpy") as weights:
            tensors = {
                name: (weights.get_slice(name).get_dtype(), weights.get_slice(name).get_shape())
                for name in weights.keys()
            }  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types for a malformed header
        raise invalid_finetune(f"adapter_model.safetensors is not a valid safetensors file: {exc}") from exc
    if not tensors:
        raise invalid_finetune("adapter_model.safetensors holds no tensors")
    pairs: dict[str, dict[str, list[int]]] = {}
    for name, (dtype, shape) in sorted(tensors.items()):
        match = LORA_TENSOR.match(name)
        if match is None:
            raise invalid_finetune(
                f"adapter_model.safetensors: tensor {name!r} is not a LoRA weight "
                "(expected base_model.model.<module>.lora_A.weight or .lora_B.weight)"
            )
        if dtype.upper() not in FLOAT_DTYPES:
            raise invalid_finetune(
                f"adapter_model.safetensors: tensor {name!r} has dtype {dtype}; "
                "quantized adapters are not supported (use float16, bfloat16 or float32)"
            )
        if len(shape) != 2:
            raise invalid_finetune(
                f"adapter_model.safetensors: tensor {name!r} has shape {shape}, expected 2 dimensions"
            )
        pairs.setdefault(match["module"], {})[match["part"]] = shape
    for module, parts in pairs.items():
        _check_pair(module, parts, base, config)


def _check_pair(module: str, parts: dict[str, list[int]], base: BaseModelShapes, config: AdapterConfig | None) -> None:
    if set(parts) != {"A", "B"}:
        missing = "lora_B" if "A" in parts else "lora_A"
        raise invalid_finetune(f"adapter_model.safetensors: module {module!r} has no {missing} weight")
    if module not in base.linear_weights:
        raise invalid_finetune(f"adapter_model.safetensors: module {module!r} does not exist in the base model")
    out_features, in_features = base.linear_weights[module]
    (rank, a_in), (b_out, b_rank) = parts["A"], parts["B"]
    if a_in != in_features or b_out != out_features or rank != b_rank:
        raise invalid_finetune(
            f"adapter_model.safetensors: shapes of {module!r} do not match the base model: "
            f"lora_A {parts['A']} and lora_B {parts['B']}, expected [r, {in_features}] and "
            f"[{out_features}, r]"
        )
    if config is None:
        return
    if rank > config.max_rank or (not config.has_rank_pattern and rank != config.rank):
        raise invalid_finetune(
            f"adapter_model.safetensors: {module!r} has rank {rank}, but adapter_config.json says r = {config.rank}"
        )
    if module.rsplit(".", 1)[-1] not in config.target_modules:
        raise invalid_finetune(
            f"adapter_model.safetensors: {module!r} is not among adapter_config.json's "
            f"target_modules {sorted(config.target_modules)}"
        )
