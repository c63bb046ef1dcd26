"""The sampling fields every text protocol accepts, with the hosted ranges.

One source of truth: the Workers AI input schema, the OpenAI request model and the published
model schema (`/ai/models/schema`) are all built from this table. A field reaches the engine
under its own name (serving/sampling.py maps the few whose values mean something else to vLLM),
so adding one here is all a new sampling field needs, unless OpenAI spells it differently.
The defaults of `max_tokens` and `temperature` are per model (`default_max_tokens` and
`default_temperature` in the config); the published schema fills them in.
"""

from __future__ import annotations

from typing import Any

SAMPLING_FIELDS: dict[str, dict[str, Any]] = {
    "max_tokens": {
        "type": "integer",
        "minimum": 1,
        "description": "The maximum number of tokens to generate in the response.",
    },
    "temperature": {
        "type": "number",
        "minimum": 0,
        "maximum": 5,
        "description": "Controls the randomness of the output; higher values produce more random results.",
    },
    "top_p": {
        "type": "number",
        "minimum": 0.001,
        "maximum": 1,
        "description": "Nucleus sampling: only the smallest set of tokens whose probability adds up to top_p.",
    },
    "top_k": {
        "type": "integer",
        "minimum": 1,
        "maximum": 50,
        "description": "Limits sampling to the top k most likely tokens.",
    },
    "seed": {
        "type": "integer",
        "minimum": 1,
        "maximum": 9999999999,
        "description": "Random seed for reproducibility of the generation.",
    },
    "repetition_penalty": {
        "type": "number",
        "minimum": 0,
        "maximum": 2,
        "description": "Penalty for repeated tokens; higher values discourage repetition. 0 means no penalty.",
    },
    "frequency_penalty": {
        "type": "number",
        "minimum": -2,
        "maximum": 2,
        "description": "Decreases the likelihood of the model repeating the same lines verbatim.",
    },
    "presence_penalty": {
        "type": "number",
        "minimum": -2,
        "maximum": 2,
        "description": "Increases the likelihood of the model introducing new topics.",
    },
}


# OpenAI's documented ranges, where they differ from the hosted schema only in shape; the OpenAI
# request models (protocol/openai.py) are built from this table. seed: any 64-bit integer.
OPENAI_SAMPLING_FIELDS: dict[str, dict[str, Any]] = {
    **SAMPLING_FIELDS,
    "temperature": {**SAMPLING_FIELDS["temperature"], "maximum": 2},
    "top_p": {**SAMPLING_FIELDS["top_p"], "minimum": 0},
    "seed": {**SAMPLING_FIELDS["seed"], "minimum": -(2**63), "maximum": 2**63 - 1},
    "n": {
        "type": "integer",
        "minimum": 1,
        "maximum": 128,
        "description": "How many choices to generate for each input message.",
    },
    "top_logprobs": {
        "type": "integer",
        "minimum": 0,
        "maximum": 20,
        "description": "How many most likely tokens to return at each position, with logprobs.",
    },
}


def integer_fields(fields: dict[str, dict[str, Any]]) -> frozenset[str]:
    """The fields the schema types as integers: JSON allows 5.0 for them, the engine wants 5."""
    return frozenset(name for name, spec in fields.items() if spec["type"] == "integer")
