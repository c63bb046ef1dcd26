from server.protocol.validation import validate
from server.protocol.workers_ai import TEXT_GENERATION_INPUT, parse_run_input


def test_integral_floats_count_as_integers():
    assert validate(3.0, {"type": "integer"}) == []
    assert validate(3.5, {"type": "integer"}) == ["Type mismatch of '/', 'number' not in 'integer'"]


def test_booleans_are_not_numbers():
    assert validate(True, {"type": "number"}) == ["Type mismatch of '/', 'boolean' not in 'number'"]


def test_nested_pointer_paths():
    body = {"messages": [{"role": "user", "content": "a"}, {"role": 1, "content": "b"}]}
    [message] = validate(body, TEXT_GENERATION_INPUT)
    assert "Type mismatch of '/messages/1/role', 'number' not in 'string'" in message


def test_two_missing_properties_are_listed():
    assert validate({}, {"type": "object", "required": ["role", "content"]}) == [
        "required properties at '/' are 'role', 'content'"
    ]


def test_unknown_fields_are_ignored():
    request = parse_run_input({"prompt": "hi", "something_new": {"x": 1}})
    assert request.prompt == "hi"


def test_both_tool_shapes_are_accepted():
    params = {"type": "object", "properties": {"city": {"type": "string", "description": "c"}}}
    legacy = {"name": "f", "description": "d", "parameters": params}
    openai = {"type": "function", "function": legacy}
    body = {"messages": [{"role": "user", "content": "x"}], "tools": [legacy, openai]}
    assert validate(body, TEXT_GENERATION_INPUT) == []


def test_parsed_request_carries_every_field():
    request = parse_run_input(
        {
            "messages": [{"role": "user", "content": "x"}],
            "seed": 5.0,
            "top_k": 3,
            "raw": True,
            "stream": True,
            "response_format": {"type": "json_object"},
        }
    )
    assert request.sampling == {"seed": 5, "top_k": 3} and isinstance(request.sampling["seed"], int)
    assert request.raw and request.stream
    assert request.output.type == "json_object"
