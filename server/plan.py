"""`wai plan`: what a config needs of a GPU, before buying or deploying one.

For each text model of a config on a given GPU: the weights' memory, the KV cache's bytes per
token, the memory left for the KV cache under `gpu_memory_utilization`, the tokens that fit, the
concurrency that cache holds at a prompt + output length, and the decode ceiling that memory
bandwidth allows (an estimate, shown beside published measurements where there are some).

Light on purpose: it needs only the config's own modules (pydantic, PyYAML), never vLLM or torch,
so that it runs on a bare GPU node before anything is installed: `python -m server.plan ...`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from server.config import ModelConfig, Settings, load_settings

GIB = 2**30
TB = 10**12

# What vLLM does not give the KV cache, per GPU, beyond the weights and the LoRA slots: the activation
# peak of its profiling forward pass (~1.3 GiB for an 8B model at 8,192 batched tokens: the MLP's
# 8,192 x 28,672 intermediate and the sampler's logits), CUDA graphs (~0.5 GiB), the CUDA context,
# cuBLAS workspaces and NCCL buffers (~0.5 GiB), and the part of a card's nominal memory that CUDA
# does not expose (an H200 sold as 141 GB shows 140.4 GiB). An estimate: vLLM measures the real
# figure at start and logs it as "Available KV cache memory".
RESERVE_GIB = 3.0
# vLLM's own default when a config leaves gpu_memory_utilization out (CacheConfig, vLLM 0.32).
VLLM_DEFAULT_GPU_MEMORY_UTILIZATION = 0.92


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


def render(plan: dict[str, Any]) -> str:
    gpu = plan["gpu"]
    bandwidth = f", {gpu['bandwidth_tb_s']} TB/s" if gpu["bandwidth_tb_s"] else ""
    lines = [f"Config: {plan['config']}", f"GPU: {gpu['name']} ({gpu['memory_gib']:g} GB{bandwidth})"]
    lines.append(f"Sequences of {plan['prompt_tokens']} prompt + {plan['output_tokens']} output tokens")
    for m in plan["models"]:
        arch = m["architecture"]
        util = m["gpu_memory_utilization"]
        if util is None:
            kv_cache = "the config's kv_cache_gib"
        else:
            kv_cache = (
                f"vLLM's share ({util:g} of each GPU) less weights, LoRA slots and a "
                f"{m['reserve_gib_per_gpu']:g} GiB reserve per GPU (activations, CUDA graphs, context)"
            )
        lines += [
            "",
            f"{m['name']} on {m['gpus']} GPU(s)",
            f"  architecture       {arch['parameters'] / 1e9:.2f}B parameters, {arch['num_hidden_layers']} layers, "
            f"{arch['num_key_value_heads']} KV heads x {arch['head_dim']} (from {arch['source']})",
            f"  weights            {m['weights_gib']:.2f} GiB ({m['weights_dtype']})",
            f"  LoRA slots         {m['lora_slots_bytes'] / GIB:.2f} GiB",
            f"  KV cache per token {m['kv_bytes_per_token'] / 1024:g} KiB ({m['kv_cache_dtype']})",
            f"  KV cache           {m['kv_cache_gib']:.2f} GiB: {kv_cache}",
            f"  tokens that fit    {m['kv_cache_tokens']:,}",
            f"  concurrency        {m['concurrency']} sequences (KV cache holds {m['kv_concurrency']}, "
            f"max_num_seqs {m['max_num_seqs']}: {m['concurrency_bound']} binds)",
        ]
        est = m["estimate"]
        if est is None:
            lines.append("  decode ceiling     unknown: give a GPU by name for its memory bandwidth")
        else:
            lines += [
                f"  decode ceiling     ESTIMATE from {est['bandwidth_tb_per_s']:g} TB/s of memory bandwidth, "
                "an upper bound (no compute, prefill or communication):",
                f"                     {est['decode_tokens_per_s_batch1']:,.0f} tokens/s for one sequence alone; "
                f"{est['decode_tokens_per_s_aggregate']:,} tokens/s in all at {est['at_concurrency']} sequences "
                f"({est['decode_tokens_per_s_per_sequence']:,.0f} each)",
            ]
        for p in m["published"]:
            lines.append(f"  published          {p['output_tokens_per_s']:,.0f} output tokens/s: {p['source']}")
        if not m["published"]:
            lines.append("  published          no published vLLM figure for this model on this GPU in wai's table")
        lines += [f"  NOTE               {note}" for note in m["notes"]]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config, e.g. configs/llama-3-8b-instruct.yaml")
    parser.add_argument("--gpu", required=True, help=f"{', '.join(GPUS)}, or a memory size such as 80GB")
    parser.add_argument("--gpus", type=int, help="GPUs one engine spans (default: the config's tensor_parallel_size)")
    parser.add_argument("--prompt-tokens", type=int, default=1000)
    parser.add_argument("--output-tokens", type=int, default=250)
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
        gpu = find_gpu(args.gpu)
        plan = {"config": args.config, **make_plan(settings, gpu, args.prompt_tokens, args.output_tokens, args.gpus)}
    except (OSError, ValueError, PlanError) as exc:
        print(f"wai plan: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(plan, indent=2) if args.json else render(plan))
    return 0 if all(m["fits"] for m in plan["models"]) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wai plan", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
