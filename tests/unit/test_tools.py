"""Reading a tool answer as it grows (server/serving/tool_calls.py): fed one character at a time, the
streamed text and arguments pieces join to exactly what the whole answer holds."""

from __future__ import annotations

import json

import pytest

from server import errors
from server.protocol.tools import past_calls, tool_use
from server.serving.requests import Message, OutputFormat, ToolUse
from server.serving.tool_calls import CallReader
from server.serving.tool_prompt import conversation

TOOLS = tool_use(
    [
        {
            "name": "note",
            "description": "Keep a note",
            "parameters": {
                "type": "object",
                "properties": {"text": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}},
                "required": ["text"],
            },
        }
    ],
    None,
    OutputFormat(),
).tools
AUTO = ToolUse(TOOLS, "auto")


def read_by_character(answer: str, use: ToolUse = AUTO):
    reader = CallReader(use)
    text, pieces = "", []
    for char in answer:
        new_text, new_pieces = reader.read(char)
        text += new_text
        pieces += new_pieces
    whole, calls, last_pieces = reader.finish()
    return reader, text, pieces + last_pieces, whole, calls


@pytest.mark.parametrize(
    "arguments",
    [
        {"text": 'braces } { and "quotes" and \\ backslashes', "tags": ["[", "]"]},
        {"text": "snow ☃ and 😀", "tags": []},
    ],
)
@pytest.mark.parametrize("spacing", [(", ", ": "), (" ,\n  ", " :  ")])
def test_call_pieces_join_to_the_arguments_text(arguments, spacing):
    comma, colon = spacing
    raw_arguments = json.dumps(arguments, separators=(comma, colon))
    answer = f' {{"name"{colon}"note"{comma}"parameters"{colon}{raw_arguments}\n}}'
    reader, text, pieces, whole, [call] = read_by_character(answer)
    assert text == whole == ""
    assert pieces[0].name == "note" and pieces[0].id == call.id and call.id.startswith("call_")
    assert all(piece.name is None for piece in pieces[1:])
    assert "".join(piece.arguments for piece in pieces) == raw_arguments
    assert call.arguments == arguments


@pytest.mark.parametrize(
    "content", ["plain", 'quotes " and \\ and \n newlines', "escaped \u00e9 and a pair 😀 and \u2028", ""]
)
@pytest.mark.parametrize("ascii_only", [True, False])
def test_text_pieces_join_to_the_text_whatever_the_escapes(content, ascii_only):
    answer = '{"content": ' + json.dumps(content, ensure_ascii=ascii_only) + "}"
    reader, text, pieces, whole, calls = read_by_character(answer)
    assert text == whole == content and pieces == [] and calls == []


def test_a_cut_call_is_an_error_and_cut_text_is_what_there_is():
    reader = CallReader(AUTO)
    reader.read('{"name": "note", "parameters": {"text": "half')
    with pytest.raises(errors.WaiError) as cut:
        reader.finish()
    assert cut.value.code == 3031
    reader = CallReader(AUTO)
    reader.read('{"content": "half an ans')
    assert reader.finish() == ("half an ans", [], [])


def test_a_call_that_does_not_match_its_parameters_is_never_returned():
    reader = CallReader(ToolUse(TOOLS, "required"))
    reader.read('{"name": "note", "parameters": {"tags": []}}')  # text is required
    with pytest.raises(errors.WaiError):
        reader.finish()


def test_past_calls_in_either_shape_read_as_the_model_writes_them():
    flat = past_calls([{"name": "note", "arguments": {"text": "a"}}], "messages.0.tool_calls")
    shaped = past_calls(
        [{"id": "call_1", "type": "function", "function": {"name": "note", "arguments": '{"text": "a"}'}}],
        "messages.0.tool_calls",
    )
    assert [(call.name, call.arguments) for call in flat] == [(call.name, call.arguments) for call in shaped]
    written = '{"name": "note", "parameters": {"text": "a"}}'
    turns = [(Message("assistant", "", flat),), (Message("assistant", "", shaped),)]
    assert conversation(turns[0], None) == conversation(turns[1], None) == [{"role": "assistant", "content": written}]


@pytest.mark.parametrize("calls", ["not a list", ["not an object"]])
def test_past_calls_that_are_not_calls_are_bad_input(calls):
    with pytest.raises(errors.WaiError) as raised:
        past_calls(calls, "messages.1.tool_calls")
    assert raised.value.status == 400 and raised.value.param.startswith("messages.1.tool_calls")
