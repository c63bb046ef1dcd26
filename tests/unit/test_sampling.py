from server.serving.requests import OutputFormat, SamplingOptions
from server.serving.sampling import generation_params


def params(**options):
    return generation_params(SamplingOptions(**options), OutputFormat(), default_max_tokens=256)


def test_defaults_are_the_hosted_ones():
    p = params()
    assert (p.max_tokens, p.temperature, p.top_p, p.top_k, p.repetition_penalty) == (256, 0.6, 1.0, 0, 1.0)


def test_repetition_penalty_zero_means_no_penalty():
    assert params(repetition_penalty=0).repetition_penalty == 1.0
    assert params(repetition_penalty=1.3).repetition_penalty == 1.3


def test_temperature_above_the_engine_ceiling_is_sampled_at_the_ceiling():
    assert params(temperature=5).temperature == 2.0
    assert params(temperature=0).temperature == 0.0


def test_json_schema_without_a_schema_asks_for_any_object():
    p = generation_params(SamplingOptions(), OutputFormat(type="json_schema"), 256)
    assert p.json_object and p.json_schema is None
    schema = {"type": "object"}
    p = generation_params(SamplingOptions(), OutputFormat(type="json_schema", schema=schema), 256)
    assert p.json_schema == schema and not p.json_object
