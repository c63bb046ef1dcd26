"""One pipeline under every protocol: the same script gives the same text and usage everywhere,
and the stand-in name is announced whichever protocol calls it."""

from __future__ import annotations

from tests.pipeline.requests import QUESTION, chat, complete, run, run_path, stream_events
from tests.support.envelopes import openai_body, result
from tests.support.fakes import TEXT_MODEL
from tests.support.repo import STAND_IN


def test_same_text_and_usage_in_every_protocol(client, engine):
    engine.script = ["alpha", "beta", "gamma", "delta"]
    native = result(run(client, {"messages": QUESTION}))
    native_prompt = engine.last_prompt
    chatted = openai_body(chat(client))
    assert engine.last_prompt == native_prompt
    assert native["response"] == chatted["choices"][0]["message"]["content"] == "alpha beta gamma delta"
    assert {key: chatted["usage"][key] for key in native["usage"]} == native["usage"]
    completed = openai_body(complete(client, {"prompt": "Once upon a time"}))
    assert completed["choices"][0]["text"] == native["response"]
    assert completed["usage"]["completion_tokens"] == native["usage"]["completion_tokens"] == 4


def test_the_stand_in_name_is_announced_in_every_protocol(client, engine):
    through_run = run(client, {"prompt": "Hi"}, model=STAND_IN)
    assert result(through_run)["response"] == engine.text()
    through_chat = chat(client, model=STAND_IN)
    assert openai_body(through_chat)["model"] == STAND_IN
    through_completions = complete(client, model=STAND_IN)
    for response in (through_run, through_chat, through_completions):
        assert response.status_code == 200, response.text
        assert response.headers["x-wai-stand-in"] == TEXT_MODEL
    # The engine behind the name is the same fake, and every request got its own id.
    assert len(engine.requests) == len(set(engine.requests)) == 3
    assert [r.headers["cf-ai-req-id"] for r in (through_run, through_chat, through_completions)] == engine.requests
    assert "x-wai-stand-in" not in chat(client, model=TEXT_MODEL).headers
    streamed, _ = stream_events(client, run_path(STAND_IN), {"prompt": "Hi"})
    assert streamed.headers["x-wai-stand-in"] == TEXT_MODEL
