"""`wai plan`'s tables: GPUs, known models, published throughputs and dtype sizes.

GPUs as their data sheets give them, the architectures of known models, the throughputs others
published, and the dtypes' sizes. Facts only; the maths is in sizing.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

GIB = 2**30
TB = 10**12


class PlanError(Exception):
    """The plan cannot be made; the message says why."""


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gib: float  # the vendor's "GB", which for HBM and GDDR is a binary size
    bandwidth_tb_s: float | None  # memory bandwidth, 10^12 bytes/s, from the vendor's data sheet


# The one table of GPUs: memory and memory bandwidth, as each vendor's data sheet gives them.
GPUS: dict[str, Gpu] = {
    "H100": Gpu("NVIDIA H100 SXM 80GB", 80, 3.35),
    "H200": Gpu("NVIDIA H200 SXM 141GB", 141, 4.8),
    "A100-80GB": Gpu("NVIDIA A100 SXM 80GB", 80, 2.0),
    "L40S": Gpu("NVIDIA L40S 48GB", 48, 0.864),
    "A10G": Gpu("NVIDIA A10G 24GB", 24, 0.6),
    "L4": Gpu("NVIDIA L4 24GB", 24, 0.3),
}
GPU_ALIASES = {"H100-80GB": "H100", "H100-SXM": "H100", "H200-141GB": "H200", "A100": "A100-80GB"}


def find_gpu(text: str) -> Gpu:
    """A GPU by name (H100, H100-80GB, A100-80GB, L4...) or by memory size alone (80GB, 24GiB)."""
    key = re.sub(r"[\s_]+", "-", text.strip()).upper()
    key = GPU_ALIASES.get(key, key)
    if key in GPUS:
        return GPUS[key]
    size = re.fullmatch(r"(\d+(?:\.\d+)?)-?GI?B", key)
    if size:
        return Gpu(f"a GPU with {size.group(1)} GB", float(size.group(1)), None)
    known = ", ".join([*GPUS, *GPU_ALIASES])
    raise PlanError(f"unknown GPU {text!r}: give one of {known}, or a memory size such as 80GB")


@dataclass(frozen=True)
class Architecture:
    """The sizes of a Llama-style decoder that memory depends on (config.json's names)."""

    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 8192
    rope_theta: float = 10000.0
    dtype: str = "bfloat16"

    @classmethod
    def from_config_json(cls, config: dict[str, Any]) -> Architecture:
        config = config.get("text_config", config)
        try:
            heads = config["num_attention_heads"]
            rope = config.get("rope_parameters") or {}
            return cls(
                num_hidden_layers=config["num_hidden_layers"],
                hidden_size=config["hidden_size"],
                num_attention_heads=heads,
                num_key_value_heads=config.get("num_key_value_heads") or heads,
                head_dim=config.get("head_dim") or config["hidden_size"] // heads,
                intermediate_size=config["intermediate_size"],
                vocab_size=config["vocab_size"],
                tie_word_embeddings=config.get("tie_word_embeddings", False),
                max_position_embeddings=config.get("max_position_embeddings", 8192),
                rope_theta=config.get("rope_theta") or rope.get("rope_theta") or 10000.0,
                dtype=config.get("torch_dtype") or config.get("dtype") or "bfloat16",
            )
        except KeyError as exc:
            raise PlanError(f"config.json has no {exc.args[0]}: not a decoder this plan knows") from exc

    def hf_config(self) -> dict[str, Any]:
        """A config.json for this architecture as a LlamaForCausalLM (no weights needed to read it)."""
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "num_hidden_layers": self.num_hidden_layers,
            "hidden_size": self.hidden_size,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "intermediate_size": self.intermediate_size,
            "vocab_size": self.vocab_size,
            "tie_word_embeddings": self.tie_word_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": 1e-05,
            "hidden_act": "silu",
            "torch_dtype": self.dtype,
        }

    @property
    def linear_parameters(self) -> int:
        """The decoder layers' matrices (attention and MLP): what FP8 quantizes."""
        h, kv = self.hidden_size, self.num_key_value_heads * self.head_dim
        q = self.num_attention_heads * self.head_dim
        per_layer = h * q + 2 * h * kv + q * h + 3 * h * self.intermediate_size
        return self.num_hidden_layers * per_layer

    @property
    def other_parameters(self) -> int:
        """Embeddings, the output head (unless tied to them) and the norms: kept in 16 bits."""
        embeddings = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return embeddings + (2 * self.num_hidden_layers + 1) * self.hidden_size

    @property
    def parameters(self) -> int:
        return self.linear_parameters + self.other_parameters

    def lora_slot_bytes(self, rank: int, dtype_bytes: int) -> int:
        """One adapter slot on the GPU: vLLM sizes A (rank x in) and B (out x rank) of every
        projection (q, k, v, o, gate, up, down) of every layer for max_rank."""
        h, kv = self.hidden_size, self.num_key_value_heads * self.head_dim
        q, i = self.num_attention_heads * self.head_dim, self.intermediate_size
        in_plus_out = (h + q) + 2 * (h + kv) + (q + h) + 2 * (h + i) + (i + h)
        return self.num_hidden_layers * rank * in_plus_out * dtype_bytes


# Architectures of models whose checkpoint may not be on this machine, by checkpoint folder name.
KNOWN_MODELS: dict[str, Architecture] = {
    # Meta's config.json for Meta-Llama-3-8B(-Instruct): 8,030,261,248 parameters.
    "meta-llama-3-8b-instruct": Architecture(
        num_hidden_layers=32,
        hidden_size=4096,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        intermediate_size=14336,
        vocab_size=128256,
        max_position_embeddings=8192,
        rope_theta=500000.0,
    ),
}
KNOWN_MODELS["meta-llama-3-8b"] = KNOWN_MODELS["meta-llama-3-8b-instruct"]


@dataclass(frozen=True)
class Published:
    """A throughput someone measured and published: shown beside the estimate, never mixed with it."""

    model: str  # a KNOWN_MODELS key
    gpu: str  # a GPUS key
    gpus: int
    fp8_weights: bool
    output_tokens_per_s: float
    source: str


PUBLISHED = [
    Published(
        model="meta-llama-3-8b-instruct",
        gpu="H100",
        gpus=1,
        fp8_weights=False,
        output_tokens_per_s=8088.35,
        source=(
            "Lambda's vLLM benchmark report (github.com/LambdaLabsML/vllm-benchmark, benchmark_v0.md): "
            "Llama 3.1 8B (Llama 3 8B's architecture), 1x H100 80GB SXM, vLLM 0.6.0 with 10 scheduler steps, "
            "max-num-seqs 256, max-seq-len 2048, 5,000 prompts sent at once; 3,958 tokens/s with 1 scheduler step"
        ),
    ),
    Published(
        model="meta-llama-3-8b-instruct",
        gpu="H100",
        gpus=1,
        fp8_weights=True,
        output_tokens_per_s=3400.4,
        source=(
            "Lambda's vLLM benchmark report (github.com/LambdaLabsML/vllm-benchmark, benchmark_v0.md): "
            "Meta-Llama-3.1-8B-FP8, 1x H100 80GB SXM, vLLM 0.5.4, 320 prompts at once"
        ),
    ),
    Published(
        model="meta-llama-3-8b-instruct",
        gpu="H100",
        gpus=2,
        fp8_weights=True,
        output_tokens_per_s=3688.64,
        source=(
            "Lambda's vLLM benchmark report (github.com/LambdaLabsML/vllm-benchmark, benchmark_v0.md): "
            "Meta-Llama-3.1-8B-FP8, 2x H100 80GB SXM tensor parallel, vLLM 0.5.4, 320 prompts at once"
        ),
    ),
]

# Bytes per value of the dtypes a config may name (engine.dtype, extra.kv_cache_dtype).
DTYPE_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2}
FP8_QUANTIZATIONS = {"fp8", "fp8_per_tensor", "fp8_per_channel", "fp8_per_block"}
FP8_KV_CACHE = {"fp8", "fp8_e4m3", "fp8_e5m2"}
