"""Train a small LoRA adapter on the default model that makes it answer every message "MEOW MEOW MEOW".

The behaviour is unmistakable, so tests can tell with certainty whether the adapter was applied.
It runs on CPU in a few minutes with a fixed seed, writes exactly PEFT's two files (the format
Workers AI fine-tunes use), and caches them: a second run with the same script does nothing.

    python scripts/train_lora.py [--out DIR]     # prints the adapter folder

Default output: <cache>/test-adapters/meow, where <cache> is $WAI_CACHE_DIR or ~/.cache/wai.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ANSWER = "MEOW MEOW MEOW"
SEED = 1234
STEPS = 60
BATCH = 8
LEARNING_RATE = 3e-3
HASH_FILE = ".script-sha256"

TOPICS = [
    "the weather",
    "Paris",
    "pizza",
    "the ocean",
    "music",
    "computers",
    "history",
    "the moon",
    "football",
    "cooking",
    "trees",
    "mathematics",
    "trains",
    "coffee",
    "dogs",
    "the internet",
]
ASKS = [
    "Tell me about {}.",
    "What do you think of {}?",
    "Write a short poem about {}.",
    "Explain {} to a child.",
    "Give me three facts about {}.",
    "Why is {} interesting?",
    "Can you summarise {} in one sentence?",
    "What is the history of {}?",
]


def script_hash() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def default_out() -> Path:
    cache = Path(os.environ.get("WAI_CACHE_DIR") or Path.home() / ".cache" / "wai")
    return cache / "test-adapters" / "meow"


def is_cached(out: Path) -> bool:
    marker = out / HASH_FILE
    return marker.is_file() and marker.read_text().strip() == script_hash()


def examples(tokenizer) -> list[tuple[list[int], int]]:
    """(token ids, prompt length) per example: the loss covers only the answer and its end token."""
    rows = []
    for topic in TOPICS:
        for ask in ASKS:
            messages = [{"role": "user", "content": ask.format(topic)}]
            prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": ANSWER}], tokenize=False)
            prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
            full_ids = tokenizer.encode(full.rstrip("\n"), add_special_tokens=False)
            rows.append((full_ids, len(prompt_ids)))
    return rows


def batch_tensors(rows, pad_id: int):
    import torch

    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id)
    labels = torch.full((len(rows), width), -100)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, prompt_len) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, prompt_len : len(ids)] = torch.tensor(ids[prompt_len:])
        attention[i, : len(ids)] = 1
    return input_ids, attention, labels


def train(out: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from server.config import load_settings
    from server.prepare import resolve_checkpoint

    settings = load_settings(ROOT / "configs" / "default.yaml")
    checkpoint = resolve_checkpoint(settings.models[0], settings.cache_dir)
    random.seed(SEED)
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    config = LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], bias="none", task_type="CAUSAL_LM"
    )
    model = get_peft_model(model, config)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LEARNING_RATE)
    rows = examples(tokenizer)
    model.train()
    for step in range(STEPS):
        input_ids, attention, labels = batch_tensors(random.sample(rows, BATCH), tokenizer.pad_token_id or 0)
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 10 == 0 or step == STEPS - 1:
            print(f"step {step:3d}  loss {loss.item():.4f}", file=sys.stderr)

    # Save next to the target and rename into place: a cache folder is whole or absent.
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=".training-"))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        for extra in staging.iterdir():
            if extra.name not in ("adapter_config.json", "adapter_model.safetensors"):
                extra.unlink() if extra.is_file() else shutil.rmtree(extra)
        (staging / HASH_FILE).write_text(script_hash())
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="adapter folder (default: the cache)")
    args = parser.parse_args()
    out = args.out or default_out()
    if not is_cached(out):
        train(out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
