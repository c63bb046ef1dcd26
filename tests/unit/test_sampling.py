from server.config import ModelConfig, Weights
from server.serving.requests import OutputFormat
from server.serving.sampling import generation_params

MODEL = ModelConfig(name="m", weights=Weights(path="/nowhere"))


def params(**options):
    return generation_params(options, OutputFormat(), MODEL).sampling


def test_defaults_are_the_models_and_the_rest_are_left_to_the_engine():
    p = generation_params({}, OutputFormat(), MODEL)
    assert (p.max_tokens, p.n, p.sampling) == (256, 1, {"temperature": 0.6})
    custom = MODEL.model_copy(update={"default_max_tokens": 40, "default_temperature": 0.2})
    p = generation_params({}, OutputFormat(), custom)
    assert (p.max_tokens, p.sampling) == (40, {"temperature": 0.2})


def test_repetition_penalty_zero_means_no_penalty():
    assert params(repetition_penalty=0)["repetition_penalty"] == 1.0
    assert params(repetition_penalty=1.3)["repetition_penalty"] == 1.3


def test_temperature_above_the_engine_ceiling_is_sampled_at_the_ceiling():
    assert params(temperature=5)["temperature"] == 2.0
    assert params(temperature=0)["temperature"] == 0.0


def test_json_schema_without_a_schema_asks_for_any_object():
    p = generation_params({}, OutputFormat(type="json_schema"), MODEL)
    assert p.json_object and p.json_schema is None
    schema = {"type": "object"}
    p = generation_params({}, OutputFormat(type="json_schema", schema=schema), MODEL)
    assert p.json_schema == schema and not p.json_object
