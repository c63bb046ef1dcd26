"""The run endpoint's text answers on the fake engine: both input forms, raw, the envelope, the stream."""

from __future__ import annotations

from tests.pipeline.requests import QUESTION, run, run_path, stream_events
from tests.support.envelopes import result, usage
from tests.support.fakes import BOS, DEFAULT_MAX_TOKENS, FakeTokenizer, chat_prompt_ids

ANSWER = "Paris is the capital of France."


def test_prompt_form_answers_with_the_scripted_text(client, engine):
    response = run(client, {"prompt": "Capital of France?"})
    answer = result(response)
    # The prompt form is one user message through the chat template, with no BOS added again.
    assert engine.last_prompt == chat_prompt_ids(QUESTION) and len(engine.last_prompt) == 5
    assert answer == {"response": ANSWER, "tool_calls": [], "usage": usage(5, 6)}
    assert response.headers["cf-ai-req-id"] == engine.requests[-1]
    assert "x-wai-stand-in" not in response.headers


def test_messages_form_renders_every_message(client, engine):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    answer = result(run(client, {"messages": messages}))
    assert engine.last_prompt == FakeTokenizer().encode(
        "<system>: Be brief.\n<user>: Hi\n<assistant>:", add_special_tokens=False
    )
    assert answer["response"] == ANSWER
    assert answer["usage"] == usage(len(engine.last_prompt), 6)


def test_raw_prompt_skips_the_template_and_keeps_bos(client, engine):
    answer = result(run(client, {"prompt": "Once upon a time", "raw": True}))
    assert engine.last_prompt == FakeTokenizer().encode("Once upon a time")
    assert engine.last_prompt[0] == BOS and len(engine.last_prompt) == 5
    assert answer["usage"] == usage(5, 6)


def test_max_tokens_cuts_the_answer(client, engine):
    engine.script = [f"w{i}" for i in range(20)]
    assert result(run(client, {"prompt": "Go", "max_tokens": 3}))["response"] == "w0 w1 w2"
    assert engine.last_params.max_tokens == 3
    # Without max_tokens the model's default applies.
    answer = result(run(client, {"prompt": "Go"}))
    assert answer["usage"]["completion_tokens"] == DEFAULT_MAX_TOKENS
    assert answer["response"] == engine.text(max_tokens=DEFAULT_MAX_TOKENS)


def test_stream_is_the_hosted_event_sequence(client, engine):
    response, parsed = stream_events(client, run_path(), {"messages": QUESTION})
    *tokens, empty, last = parsed
    assert [event["response"] for event in tokens] == ["Paris", " is", " the", " capital", " of", " France."]
    for event in tokens:
        assert set(event) == {"response", "p"}
        assert event["p"].isalnum() and 1 <= len(event["p"]) <= 32
    assert empty == {"response": ""}
    assert last == {"response": "", "usage": usage(5, 6)}
    assert response.headers["cf-ai-req-id"] == engine.requests[-1]
    assert response.headers["cache-control"] == "no-cache"


def test_stream_and_sync_answers_agree(client, engine):
    engine.script = ["one", "two", "three"]
    sync = result(run(client, {"prompt": "Count"}))
    _, parsed = stream_events(client, run_path(), {"prompt": "Count"})
    assert "".join(event["response"] for event in parsed[:-2]) == sync["response"] == "one two three"
    assert parsed[-1]["usage"] == sync["usage"]


def test_usage_reports_the_prompt_tokens_the_prefix_cache_served(client, engine):
    engine.cached_tokens = 4
    assert result(run(client, {"messages": QUESTION}))["usage"] == usage(5, 6, cached_tokens=4)
    _, parsed = stream_events(client, run_path(), {"messages": QUESTION})
    assert parsed[-1] == {"response": "", "usage": usage(5, 6, cached_tokens=4)}
