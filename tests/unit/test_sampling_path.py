"""Every sampling field a client may send reaches vLLM's SamplingParams under its own name and value:
from the published schema (and OpenAI's spellings) through the protocol parsers and the one engine
mapping. A field dropped or renamed on the way fails here."""

from __future__ import annotations

import pytest
from vllm import SamplingParams

from server.config import ModelConfig, Weights
from server.engine.types import EngineRejected, GenerationParams
from server.engine.vllm_engine import sampling_params
from server.protocol import openai, workers_ai
from server.protocol.sampling import OPENAI_SAMPLING_FIELDS
from server.serving.sampling import generation_params

MODEL = ModelConfig(name="m", weights=Weights(path="/nowhere"))
# Run-endpoint fields that are not sampling: they choose the input, the output format, tools or the adapter.
NOT_SAMPLING = {"prompt", "lora", "response_format", "raw", "stream", "tools", "tool_choice"}
# OpenAI's spellings of the same engine fields.
OPENAI_NAMES = {"top_logprobs": "logprobs", "max_completion_tokens": "max_tokens"}


def ordinary_value(spec: dict) -> int | float:
    """A legal value a quarter into the field's range: away from the edges the mapping reinterprets."""
    low, high = spec.get("minimum", 0), spec.get("maximum", spec.get("minimum", 0) + 28)
    value = low + (high - low) / 4
    return int(value) if spec["type"] == "integer" else value


def engine_params(text_request) -> SamplingParams:
    return sampling_params(generation_params(text_request.sampling, text_request.output, MODEL))


def published_sampling_fields() -> dict[str, dict]:
    prompt_form = workers_ai.published_schema(MODEL)["input"]["oneOf"][0]
    return {name: spec for name, spec in prompt_form["properties"].items() if name not in NOT_SAMPLING}


@pytest.mark.parametrize("name", sorted(published_sampling_fields()))
def test_run_endpoint_field_reaches_the_engine(name):
    value = ordinary_value(published_sampling_fields()[name])
    params = engine_params(workers_ai.parse_run_input({"prompt": "x", name: value}))
    assert getattr(params, name) == pytest.approx(value)


@pytest.mark.parametrize("name", sorted(OPENAI_SAMPLING_FIELDS) + ["max_completion_tokens"])
def test_openai_field_reaches_the_engine(name):
    value = ordinary_value(OPENAI_SAMPLING_FIELDS.get(name) or OPENAI_SAMPLING_FIELDS["max_tokens"])
    extra = {"logprobs": True} if name == "top_logprobs" else {}
    chat = openai.parse(
        openai.ChatCompletionRequest,
        {"model": "m", "messages": [{"role": "user", "content": "x"}], name: value, **extra},
    )
    params = engine_params(openai.text_request(chat))
    assert getattr(params, OPENAI_NAMES.get(name, name)) == pytest.approx(value)


def test_openai_stop_and_logprobs_switch_reach_the_engine():
    chat = openai.parse(
        openai.ChatCompletionRequest,
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": "END", "logprobs": True},
    )
    params = engine_params(openai.text_request(chat))
    assert (params.stop, params.logprobs) == (["END"], 0)
    completion = openai.parse(openai.CompletionRequest, {"model": "m", "prompt": "x", "logprobs": 2, "stop": ["a"]})
    params = engine_params(openai.completion_text_request(completion))
    assert (params.stop, params.logprobs) == (["a"], 2)


def test_every_published_field_is_a_field_of_the_engine():
    assert set(published_sampling_fields()) <= set(SamplingParams.__struct_fields__)


def test_a_field_the_engine_does_not_know_is_a_clear_refusal():
    with pytest.raises(EngineRejected, match="no sampling field min_q"):
        sampling_params(GenerationParams(max_tokens=4, sampling={"min_q": 0.1}))
