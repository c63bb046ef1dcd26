"""The sampling fields every text protocol accepts, with the hosted ranges and defaults.

One source of truth: the Workers AI input schema, the OpenAI request checks and the
published model schema (`/ai/models/schema`) are all built from this table.
"""

from __future__ import annotations

from typing import Any

SAMPLING_FIELDS: dict[str, dict[str, Any]] = {
    "max_tokens": {
        "type": "integer", "minimum": 1, "default": 256,
        "description": "The maximum number of tokens to generate in the response.",
    },
    "temperature": {
        "type": "number", "minimum": 0, "maximum": 5, "default": 0.6,
        "description": "Controls the randomness of the output; higher values produce more random results.",
    },
    "top_p": {
        "type": "number", "minimum": 0.001, "maximum": 1,
        "description": "Nucleus sampling: only the smallest set of tokens whose probability adds up to top_p.",
    },
    "top_k": {
        "type": "integer", "minimum": 1, "maximum": 50,
        "description": "Limits sampling to the top k most likely tokens.",
    },
    "seed": {
        "type": "integer", "minimum": 1, "maximum": 9999999999,
        "description": "Random seed for reproducibility of the generation.",
    },
    "repetition_penalty": {
        "type": "number", "minimum": 0, "maximum": 2,
        "description": "Penalty for repeated tokens; higher values discourage repetition. 0 means no penalty.",
    },
    "frequency_penalty": {
        "type": "number", "minimum": -2, "maximum": 2,
        "description": "Decreases the likelihood of the model repeating the same lines verbatim.",
    },
    "presence_penalty": {
        "type": "number", "minimum": -2, "maximum": 2,
        "description": "Increases the likelihood of the model introducing new topics.",
    },
}


# OpenAI's documented ranges, where they differ from the hosted schema only in shape; the OpenAI
# request model (protocol/openai.py) reads its bounds from here. seed: any 64-bit integer.
OPENAI_SAMPLING_FIELDS: dict[str, dict[str, Any]] = {
    **SAMPLING_FIELDS,
    "temperature": {**SAMPLING_FIELDS["temperature"], "maximum": 2},
    "top_p": {**SAMPLING_FIELDS["top_p"], "minimum": 0},
    "seed": {**SAMPLING_FIELDS["seed"], "minimum": -(2**63), "maximum": 2**63 - 1},
    "n": {"type": "integer", "minimum": 1, "maximum": 128, "default": 1,
          "description": "How many choices to generate for each input message."},
    "top_logprobs": {"type": "integer", "minimum": 0, "maximum": 20,
                     "description": "How many most likely tokens to return at each position, with logprobs."},
}
