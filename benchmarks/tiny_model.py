"""A tiny random-weight Llama on the default model's tokenizer: an engine too fast to be the limit.

One layer, hidden size 64: the engine's step costs next to nothing, so the API front ends (and the
load generator) become the limit. Built at bench time from a fixed seed (the same bytes every time),
in float32 safetensors, never committed. The rows of the output layer for the tokenizer's special
tokens are zero, so greedy decoding never picks end-of-sequence (a random logit beats 0 among 49,152):
every request generates exactly its max_tokens, on the Workers AI endpoint too, which has no ignore_eos.

    python -m benchmarks.tiny_model [--out test-artifacts/bench-frontend/tiny-model]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = ROOT / "test-artifacts" / "bench-frontend" / "tiny-model"
SEED = 1234
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")
SHAPE = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2, "num_key_value_heads": 1}
HEAD_DIM = 32  # hidden 64 over 2 heads; vLLM's CPU attention takes head sizes of 32 and up


def tokenizer_dir(config: str | Path = ROOT / "configs" / "default.yaml") -> Path:
    """The prepared checkpoint of the config's first text model, whose tokenizer the tiny model uses."""
    from server.config import load_settings
    from server.prepare import resolve_checkpoint

    settings = load_settings(str(config))
    model = next(m for m in settings.models if m.task == "text-generation")
    return Path(resolve_checkpoint(model, settings.cache_dir))


def model_config(vocab_size: int, bos: int, eos: int) -> dict[str, Any]:
    """The Hugging Face config of the tiny model."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": eos,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        **SHAPE,
        "num_hidden_layers": 1,
        "initializer_range": 0.02,
        "max_position_embeddings": 2048,
        "mlp_bias": False,
        "rms_norm_eps": 1e-05,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": vocab_size,
        "wai_tiny_model_seed": SEED,  # part of the identity checked before a build is reused
    }


def weights(config: dict[str, Any], never: list[int]) -> dict[str, Any]:
    """Seeded random float32 weights; the output rows of the `never` tokens are zero."""
    import numpy as np

    rng = np.random.default_rng(SEED)
    h, i, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    q, kv = config["num_attention_heads"] * HEAD_DIM, config["num_key_value_heads"] * HEAD_DIM

    def normal(*shape: int, std: float = 0.02) -> Any:
        return (rng.standard_normal(shape, dtype=np.float32) * std).astype(np.float32)

    layer = "model.layers.0."
    tensors = {
        "model.embed_tokens.weight": normal(v, h, std=1.0),
        layer + "input_layernorm.weight": np.ones(h, np.float32),
        layer + "self_attn.q_proj.weight": normal(q, h),
        layer + "self_attn.k_proj.weight": normal(kv, h),
        layer + "self_attn.v_proj.weight": normal(kv, h),
        layer + "self_attn.o_proj.weight": normal(h, q),
        layer + "post_attention_layernorm.weight": np.ones(h, np.float32),
        layer + "mlp.gate_proj.weight": normal(i, h),
        layer + "mlp.up_proj.weight": normal(i, h),
        layer + "mlp.down_proj.weight": normal(h, i),
        "model.norm.weight": np.ones(h, np.float32),
        "lm_head.weight": normal(v, h, std=1.0),
    }
    tensors["lm_head.weight"][never] = 0.0
    return tensors


def special_tokens(tokenizer: dict[str, Any]) -> list[int]:
    """The ids of the tokenizer's added (special) tokens: end of sequence among them."""
    return sorted(token["id"] for token in tokenizer.get("added_tokens", []))


def build(out: Path = DEFAULT_DIR, source: Path | None = None) -> Path:
    """The tiny model in `out`, built from `source`'s tokenizer unless a matching build is there."""
    from safetensors.numpy import save_file

    source = source or tokenizer_dir()
    tokenizer = json.loads((source / "tokenizer.json").read_text())
    base = json.loads((source / "config.json").read_text())
    config = model_config(base["vocab_size"], base.get("bos_token_id", 1), base.get("eos_token_id", 2))
    if is_built(out, config):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as work:
        folder = Path(work) / "model"
        folder.mkdir()
        for name in TOKENIZER_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, folder / name)
        eos = config["eos_token_id"]
        generation = {"bos_token_id": config["bos_token_id"], "eos_token_id": eos, "pad_token_id": eos}
        (folder / "generation_config.json").write_text(json.dumps(generation, indent=1) + "\n")
        save_file(weights(config, special_tokens(tokenizer)), str(folder / "model.safetensors"))
        # config.json last: its presence marks a complete build.
        (folder / "config.json").write_text(json.dumps(config, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        folder.rename(out)
    return out


def is_built(out: Path, config: dict[str, Any]) -> bool:
    path = out / "config.json"
    return path.is_file() and (out / "model.safetensors").is_file() and json.loads(path.read_text()) == config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tiny_model", description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"), help="whose tokenizer")
    args = parser.parse_args(argv)
    print(build(args.out, tokenizer_dir(args.config)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
