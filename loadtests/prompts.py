"""Prompts to send: the bundled set of realistic chat prompts, or synthetic ones of controlled length."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from importlib import resources
from typing import Any

# Common English words, each one token in the usual BPE vocabularies when preceded by a space,
# so that a synthetic prompt of N words is close to N tokens without a tokenizer.
_WORDS = (
    "the of and to in is was for on that with as by at from this have not are but had his they you "
    "were her she there been one all their has would when which out who will more if no can said what "
    "about into up them some could him time than only its new two may first then do any like my now over "
    "such our man me even most made after also did many before must through back years where much your way "
    "well down should because each just those people how too little state good very make world still own "
    "see men work long get here between both life being under never day same another know while last might "
    "us great old year off come since against go came right used take three house place small found part "
    "water city river market garden window table paper light music story country school family friend"
).split()


@dataclass(frozen=True)
class Prompt:
    """One request's input: chat messages, the most tokens to generate, and the LoRA adapter to answer with."""

    id: str
    messages: list[dict[str, str]]
    max_tokens: int
    lora: str | None = None  # Workers AI's `lora`; OpenAI servers take the adapter as the model (vLLM's way)

    def as_json(self) -> dict[str, Any]:
        lora = {"lora": self.lora} if self.lora is not None else {}
        return {"id": self.id, "messages": self.messages, "max_tokens": self.max_tokens, **lora}


def chat_prompts(max_tokens: int) -> list[Prompt]:
    """The bundled realistic chat prompts (single and multi-turn, some with a system message)."""
    text = resources.files("loadtests").joinpath("data/chat_prompts.json").read_text()
    return [Prompt(item["id"], item["messages"], max_tokens) for item in json.loads(text)]


def synthetic_prompts(
    count: int, input_tokens: int, output_tokens: int, seed: int = 0, tokenizer: Any | None = None
) -> list[Prompt]:
    """`count` distinct prompts of random words, `input_tokens` long (exactly, given a tokenizer).

    Every prompt differs from its first word on, so no prompt can reuse another's cached prefix.
    """
    rng = random.Random(seed)
    prompts = []
    for i in range(count):
        words = [rng.choice(_WORDS) for _ in range(input_tokens + 8)]
        text = " ".join(words)
        if tokenizer is not None:
            ids = tokenizer.encode(text, add_special_tokens=False)[:input_tokens]
            text = tokenizer.decode(ids)
        else:
            text = " ".join(words[:input_tokens])
        prompts.append(Prompt(f"synthetic-{i:04d}", [{"role": "user", "content": text}], output_tokens))
    return prompts


def load_tokenizer(name_or_path: str) -> Any:
    """A Hugging Face tokenizer, to make synthetic prompts exactly `input_tokens` long."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name_or_path)


def cycle(prompts: list[Prompt], count: int, offset: int = 0) -> list[Prompt]:
    """`count` prompts taken in order from the set, starting at `offset` and wrapping around."""
    return [prompts[(offset + i) % len(prompts)] for i in range(count)]
