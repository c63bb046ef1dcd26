"""The one mapping from a client's sampling options to the engine's, for every protocol.

Where the wire ranges and vLLM's disagree, the decision is made here:
- temperature 0 means greedy decoding (vLLM's own meaning).
- temperature above 2 (the wire allows up to 5) is sampled at 2, vLLM's ceiling: at 2 the
  distribution is already close to flat, and refusing a legal value would break clients.
- repetition_penalty 0 is legal on the wire but undefined for vLLM's multiplicative penalty
  (it must be > 0); wai reads 0 as "no penalty", the same as leaving it out (1.0).
- top_k not given means no top-k cut (vLLM 0); top_p not given means 1.0.
- n > 1 with greedy decoding (temperature 0, legal for OpenAI clients) is refused by vLLM; every
  greedy choice is the same text, so the engine decodes it once and the choice is repeated n times
  (usage counts every choice, as for sampled ones).
- top_p 0 (legal for OpenAI clients) keeps only the most likely token, as the smallest nucleus
  does; vLLM wants top_p > 0, so it gets 1e-6 (still representable in the engine's float32).
"""

from __future__ import annotations

import dataclasses

from server.engine.types import GenerationParams
from server.serving.requests import OutputFormat, SamplingOptions

DEFAULT_TEMPERATURE = 0.6  # Workers AI's default for llama-3-8b-instruct
ENGINE_MAX_TEMPERATURE = 2.0
SMALLEST_TOP_P = 1e-6
GREEDY_BELOW_TEMPERATURE = 1e-5  # vLLM decodes greedily under this temperature


def generation_params(options: SamplingOptions, output: OutputFormat, default_max_tokens: int) -> GenerationParams:
    repetition_penalty = options.repetition_penalty
    if not repetition_penalty:  # None or 0: no penalty
        repetition_penalty = 1.0
    return GenerationParams(
        max_tokens=options.max_tokens if options.max_tokens is not None else default_max_tokens,
        temperature=min(
            options.temperature if options.temperature is not None else DEFAULT_TEMPERATURE,
            ENGINE_MAX_TEMPERATURE,
        ),
        top_p=max(options.top_p, SMALLEST_TOP_P) if options.top_p is not None else 1.0,
        top_k=options.top_k if options.top_k is not None else 0,
        seed=options.seed,
        repetition_penalty=repetition_penalty,
        frequency_penalty=options.frequency_penalty or 0.0,
        presence_penalty=options.presence_penalty or 0.0,
        stop=options.stop,
        n=options.n,
        logprobs=options.logprobs,
        json_schema=output.schema if output.type == "json_schema" else None,
        # json_schema without a schema asks only for some JSON object
        json_object=output.type == "json_object" or (output.type == "json_schema" and output.schema is None),
    )


def engine_choices(params: GenerationParams) -> tuple[GenerationParams, int]:
    """The params to run and how many times to repeat each engine choice (see the module notes)."""
    if params.n > 1 and params.temperature < GREEDY_BELOW_TEMPERATURE:
        return dataclasses.replace(params, n=1), params.n
    return params, 1
