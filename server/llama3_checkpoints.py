"""Llama 3 checkpoints built around Meta's tokenizer: a tiny test model, or 8B's shape without weights.

`wai prepare` builds them (server/prepare.py): the tiny random-weight model whose greedy output is
known (the Llama 3 path's tests), and Llama 3 8B's architecture with no weights, for vLLM's
`load_format: dummy` on a GPU node.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger("wai.prepare")

# Meta's Llama 3 Instruct chat template as Meta-Llama-3-8B-Instruct's tokenizer_config.json carries it,
# for the checkpoint's own copy. wai serves configs/templates/llama-3-instruct.jinja (the configs name
# it); tests/unit/test_llama3_recipe.py checks that the two are the same text.
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] "
    "| trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
BEGIN_OF_TEXT, END_OF_TEXT, EOT = 128000, 128001, 128009
DOUBLE_NEWLINE = 271  # "\n\n": the last token of every chat prompt (after the assistant header)
DIGITS = range(15, 25)  # the tokens "0" .. "9"
LETTERS = range(64, 74)  # the tokens "a" .. "j"

# Meta-Llama-3-8B-Instruct's own settings, as its config.json and generation_config.json have them
# (minus the layer sizes, which are tiny here).
TINY_LLAMA3_SEED = 20240418
TINY_LLAMA3_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 128256,
    "hidden_size": 64,
    "intermediate_size": 224,  # 3.5 x hidden, as 14,336 is to 4,096
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,  # grouped-query attention, as Llama 3's 32 heads over 8
    "head_dim": 32,  # the smallest head vLLM's CPU attention takes
    "hidden_act": "silu",
    "max_position_embeddings": 8192,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-05,
    "tie_word_embeddings": False,
    "attention_bias": False,
    "bos_token_id": BEGIN_OF_TEXT,
    "eos_token_id": EOT,
}
LLAMA3_GENERATION_CONFIG = {
    "bos_token_id": BEGIN_OF_TEXT,
    "eos_token_id": [END_OF_TEXT, EOT],
    "do_sample": True,
    "temperature": 0.6,
    "max_length": 4096,
    "top_p": 0.9,
}
# tokenizer.json as Meta ships it today: the wheel carries the first release's, whose post-processor
# did not add <|begin_of_text|> when a text is encoded; Meta's update (May 2024) changed only this.
LLAMA3_POST_PROCESSOR = {
    "type": "Sequence",
    "processors": [
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
            ],
            "pair": [
                {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                {"Sequence": {"id": "B", "type_id": 1}},
            ],
            "special_tokens": {
                "<|begin_of_text|>": {
                    "id": "<|begin_of_text|>",
                    "ids": [BEGIN_OF_TEXT],
                    "tokens": ["<|begin_of_text|>"],
                }
            },
        },
    ],
}


def tiny_llama3_successors() -> dict[int, int]:
    """The token the tiny model answers after each token it knows; after any other, <|eot_id|>.

    A chat answer is "3210" then <|eot_id|>; a raw prompt ending in a digit counts down from it to
    "0" then <|eot_id|>, one ending in a letter "a".."j" goes back to "a" then <|end_of_text|>. So
    tests choose which stop token comes, and after how many tokens.
    """
    successors = {DOUBLE_NEWLINE: DIGITS[3]}
    successors.update({digit: digit - 1 for digit in DIGITS[1:]})
    successors[DIGITS[0]] = EOT
    successors.update({letter: letter - 1 for letter in LETTERS[1:]})
    successors[LETTERS[0]] = END_OF_TEXT
    return successors


def build_tiny_llama3(tokenizer_dir: Path, out_dir: Path) -> None:
    """A checkpoint laid out as Meta-Llama-3-8B-Instruct's: its tokenizer and chat template, its
    config with tiny layers, random weights from a fixed seed (so every build is the same)."""
    log.info("building the tiny random-weight Llama 3 model")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_llama3_tokenizer(tokenizer_dir, out_dir)
    model = tiny_llama3_model()
    model.save_pretrained(out_dir, safe_serialization=True)
    (out_dir / "generation_config.json").write_text(json.dumps(LLAMA3_GENERATION_CONFIG, indent=2) + "\n")


# Meta-Llama-3-8B-Instruct's config.json, its weights left out: vLLM with `load_format: dummy` builds the
# same layers with random values, so the kernels, the memory and the speed are Llama 3 8B's.
LLAMA3_8B_CONFIG: dict[str, Any] = {
    **TINY_LLAMA3_CONFIG,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "torch_dtype": "bfloat16",
}


def build_llama3_architecture(tokenizer_dir: Path, out_dir: Path, config: dict[str, Any]) -> None:
    """A checkpoint folder with Llama 3's tokenizer and a config.json, and no weights at all: only an engine
    that makes up its own (vLLM's `load_format: dummy`) can serve it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_llama3_tokenizer(tokenizer_dir, out_dir)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out_dir / "generation_config.json").write_text(json.dumps(LLAMA3_GENERATION_CONFIG, indent=2) + "\n")


class TokenizerUnreadable(Exception):
    """The Llama 3 tokenizer a checkpoint is built around could not be read."""


def write_llama3_tokenizer(tokenizer_dir: Path, out_dir: Path) -> None:
    try:
        tokenizer = json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TokenizerUnreadable(f"the Llama 3 tokenizer could not be read: {exc}") from exc
    tokenizer["post_processor"] = LLAMA3_POST_PROCESSOR
    (out_dir / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False, indent=2), encoding="utf-8")
    if (tokenizer_dir / "tokenizer.model").is_file():  # Meta's tiktoken file, where Meta keeps it
        (out_dir / "original").mkdir(exist_ok=True)
        shutil.copyfile(tokenizer_dir / "tokenizer.model", out_dir / "original" / "tokenizer.model")
    special = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
    added = {
        str(token["id"]): {
            key: token[key] for key in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")
        }
        for token in tokenizer["added_tokens"]
    }
    config = {
        "added_tokens_decoder": added,
        **special,
        "chat_template": LLAMA3_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": True,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 1000000000000000019884624838656,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n")
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def tiny_llama3_model():  # -> transformers.LlamaForCausalLM (imported here: prepare-only dependency)
    """Random weights, shaped so that greedy decoding follows tiny_llama3_successors().

    Every layer's output projections (o_proj, down_proj) are zero, so the last hidden state is the
    current token's embedding, normalized: the next token depends on the current one alone.
    Embeddings: dimension 0 is 1 for every token; each known token also has a dimension of its own
    (weight 4); the other tokens have random values in the dimensions no known token uses. lm_head:
    <|eot_id|> reads dimension 0 (weight 1, so it wins after any other token), and each successor
    reads its predecessor's dimension (weight 4, 16 times more than <|eot_id|>'s pull).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(TINY_LLAMA3_SEED)
    config = LlamaConfig(**TINY_LLAMA3_CONFIG)
    model = LlamaForCausalLM(config)
    successors = tiny_llama3_successors()
    hidden, vocab = config.hidden_size, config.vocab_size
    own_dims = {token: 1 + i for i, token in enumerate(successors)}
    free = 1 + len(own_dims)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed = torch.zeros(vocab, hidden)
        embed[:, 0] = 1.0
        embed[:, free:] = torch.randn(vocab, hidden - free)
        lm_head = torch.zeros(vocab, hidden)
        lm_head[EOT, 0] = 1.0
        for token, dim in own_dims.items():
            embed[token, free:] = 0.0
            embed[token, dim] = 4.0
            lm_head[successors[token], dim] = 4.0
        model.model.embed_tokens.weight.copy_(embed)
        model.lm_head.weight.copy_(lm_head)
    return model.bfloat16()  # as Meta ships its weights
