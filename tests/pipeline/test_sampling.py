"""What the engine gets for a request's sampling fields: the wire values mapped to vLLM's terms."""

from __future__ import annotations

from server.engine.types import GenerationParams
from tests.pipeline.requests import chat, complete, run
from tests.support.envelopes import openai_body, result
from tests.support.fakes import DEFAULT_MAX_TOKENS

DEFAULT_TEMPERATURE = 0.6  # ModelConfig's default, which fake_settings keeps


def test_fields_left_out_keep_the_engine_defaults(client, engine):
    result(run(client, {"prompt": "Hi"}))
    assert engine.last_params == GenerationParams(
        max_tokens=DEFAULT_MAX_TOKENS, n=1, sampling={"temperature": DEFAULT_TEMPERATURE}
    )


def test_run_endpoint_edges_reach_the_engine_mapped(client, engine):
    result(
        run(
            client,
            {
                "prompt": "Hi",
                "temperature": 5,
                "repetition_penalty": 0,
                "top_p": 0.5,
                "top_k": 3,
                "seed": 42,
                "max_tokens": 3.0,
                "frequency_penalty": -1,
                "presence_penalty": 1.5,
            },
        )
    )
    params = engine.last_params
    assert params.max_tokens == 3 and isinstance(params.max_tokens, int)
    assert params.sampling == {
        "temperature": 2.0,
        "repetition_penalty": 1.0,
        "top_p": 0.5,
        "top_k": 3,
        "seed": 42,
        "frequency_penalty": -1,
        "presence_penalty": 1.5,
    }
    assert isinstance(params.sampling["top_k"], int)


def test_openai_spellings_reach_the_engine(client, engine):
    openai_body(chat(client, {"max_completion_tokens": 4, "top_p": 0, "stop": "x", "seed": -7, "temperature": 1.5}))
    params = engine.last_params
    assert params.max_tokens == 4
    assert params.sampling == {"temperature": 1.5, "top_p": 1e-6, "stop": ["x"], "seed": -7}
    openai_body(complete(client, {"stop": ["a", "b"], "max_tokens": 2}))
    assert engine.last_params.max_tokens == 2
    assert engine.last_params.sampling == {"temperature": DEFAULT_TEMPERATURE, "stop": ["a", "b"]}


def test_json_schema_mode_reaches_the_engine_and_parses_the_answer(client, engine):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    engine.script = ['{"city":', '"Paris"}']
    answer = result(
        run(client, {"prompt": "Where?", "response_format": {"type": "json_schema", "json_schema": schema}})
    )
    assert engine.last_params.json_schema == schema and engine.last_params.json_object is False
    assert answer["response"] == {"city": "Paris"}
    openai_body(chat(client, {"response_format": {"type": "json_object"}}))
    assert engine.last_params.json_object is True and engine.last_params.json_schema is None
