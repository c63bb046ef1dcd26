"""The one mapping from a client's sampling fields to the engine's, for every protocol.

A field reaches vLLM under its wire name (protocol/sampling.py) with the value the client sent,
except where the wire ranges and vLLM's disagree; those decisions are the `EDGES` below:
- temperature 0 means greedy decoding (vLLM's own meaning).
- temperature above 2 (the wire allows up to 5) is sampled at 2, vLLM's ceiling: at 2 the
  distribution is already close to flat, and refusing a legal value would break clients.
- repetition_penalty 0 is legal on the wire but undefined for vLLM's multiplicative penalty
  (it must be > 0); wai reads 0 as "no penalty", the same as leaving it out (1.0).
- top_p 0 (legal for OpenAI clients) keeps only the most likely token, as the smallest nucleus
  does; vLLM wants top_p > 0, so it gets 1e-6 (still representable in the engine's float32).
- a field left out keeps vLLM's default (top_k: no cut, top_p: 1.0, no penalties), except
  max_tokens and temperature, which take the model's configured defaults.
- n > 1 with greedy decoding (temperature 0, legal for OpenAI clients) is refused by vLLM; every
  greedy choice is the same text, so the engine decodes it once and the choice is repeated n times
  (usage counts every choice, as for sampled ones).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from server.config import ModelConfig
from server.engine.types import GenerationParams
from server.serving.requests import OutputFormat

ENGINE_MAX_TEMPERATURE = 2.0
SMALLEST_TOP_P = 1e-6
GREEDY_BELOW_TEMPERATURE = 1e-5  # vLLM decodes greedily under this temperature
INTERACTIVE, BACKGROUND = 0, 1  # engine priorities: lower goes first

EDGES: dict[str, Callable[[Any], Any]] = {
    "temperature": lambda temperature: min(temperature, ENGINE_MAX_TEMPERATURE),
    "top_p": lambda top_p: max(top_p, SMALLEST_TOP_P),
    "repetition_penalty": lambda penalty: penalty or 1.0,
    "stop": list,
}


def generation_params(
    sampling: Mapping[str, Any], output: OutputFormat, model: ModelConfig, background: bool = False
) -> GenerationParams:
    given = {"max_tokens": model.default_max_tokens, "temperature": model.default_temperature, **sampling}
    values = {name: EDGES[name](value) if name in EDGES else value for name, value in given.items()}
    return GenerationParams(
        max_tokens=values.pop("max_tokens"),
        n=values.pop("n", 1),
        sampling=values,
        json_schema=output.schema if output.type == "json_schema" else None,
        # json_schema without a schema asks only for some JSON object
        json_object=output.type == "json_object" or (output.type == "json_schema" and output.schema is None),
        priority=BACKGROUND if background else INTERACTIVE,
    )


def engine_choices(params: GenerationParams) -> tuple[GenerationParams, int]:
    """The params to run and how many times to repeat each engine choice (see the module notes)."""
    if params.n > 1 and params.sampling["temperature"] < GREEDY_BELOW_TEMPERATURE:
        return dataclasses.replace(params, n=1), params.n
    return params, 1
