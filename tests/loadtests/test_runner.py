"""Pure logic of the load plan and the wire formats: arrivals, rounds, URLs and events."""

import math
import statistics

from loadtests.prompts import chat_prompts, synthetic_prompts
from loadtests.protocols import PROTOCOLS, Sampling
from loadtests.runner import LoadPlan, _round_slice, arrival_times


def test_poisson_arrivals_have_the_asked_mean_rate_and_repeat_for_every_target():
    plan = LoadPlan(mode="open", levels=[4.0], num_requests=4000, seed=7)
    times = arrival_times(plan, 4.0)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(times) == 4000 and times[0] == 0.0
    assert math.isclose(statistics.mean(gaps), 0.25, rel_tol=0.05)
    assert math.isclose(statistics.stdev(gaps), 0.25, rel_tol=0.1)  # exponential: stdev = mean
    assert arrival_times(plan, 4.0) == times


def test_burstiness_changes_the_spread_not_the_rate():
    steady = LoadPlan(mode="open", levels=[4.0], num_requests=4000, burstiness=4.0)
    times = arrival_times(steady, 4.0)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert math.isclose(statistics.mean(gaps), 0.25, rel_tol=0.05)
    assert math.isclose(statistics.stdev(gaps), 0.125, rel_tol=0.1)  # gamma: stdev = mean / sqrt(shape)


def test_an_infinite_rate_sends_everything_at_once_and_a_duration_bounds_the_schedule():
    assert arrival_times(LoadPlan(mode="open", levels=[math.inf], num_requests=5), math.inf) == [0.0] * 5
    times = arrival_times(LoadPlan(mode="open", levels=[10.0], duration_s=3.0), 10.0)
    assert max(times) <= 3.0 and 20 < len(times) < 45


def test_rounds_split_a_level_into_slices_that_cover_every_request_once():
    prompts = synthetic_prompts(10, 4, 4)
    plan = LoadPlan(mode="closed", levels=[2.0], num_requests=10, rounds=3)
    slices = [_round_slice(plan, 2.0, prompts, None, r, 3).prompts for r in range(3)]
    assert [p.id for s in slices for p in s] == [p.id for p in prompts]
    plan = LoadPlan(mode="open", levels=[2.0], num_requests=10, rounds=3)
    arrivals = arrival_times(plan, 2.0)
    parts = [_round_slice(plan, 2.0, prompts, arrivals, r, 3) for r in range(3)]
    assert sum(len(p.arrivals) for p in parts) == 10 and all(p.arrivals[0] == 0.0 for p in parts)


def test_default_rounds_interleave_only_when_comparing():
    plan = LoadPlan(mode="closed", levels=[1.0, 4.0, 32.0], num_requests=64)
    assert plan.rounds_for(4.0, 1) == 1
    assert [plan.rounds_for(c, 2) for c in (1.0, 4.0, 32.0)] == [8, 8, 2]  # every target goes first once
    plan = LoadPlan(mode="closed", levels=[1.0, 32.0, 64.0], num_requests=[16, 128, 32])
    assert plan.requests_at(32.0) == 128 and plan.rounds_for(32.0, 3) == 2
    assert plan.rounds_for(64.0, 2) == 1  # fewer requests than one wave: a single round


def test_bundled_chat_prompts_are_varied_and_well_formed():
    prompts = chat_prompts(64)
    assert len(prompts) >= 40 and len({p.id for p in prompts}) == len(prompts)
    assert all(p.messages[-1]["role"] == "user" and p.max_tokens == 64 for p in prompts)
    assert any(len(p.messages) > 2 for p in prompts) and any(p.messages[0]["role"] == "system" for p in prompts)


def test_synthetic_prompts_differ_from_the_first_word_and_have_the_asked_length():
    prompts = synthetic_prompts(50, 32, 16, seed=1)
    assert all(len(p.messages[0]["content"].split()) == 32 and p.max_tokens == 16 for p in prompts)
    assert len({tuple(p.messages[0]["content"].split()[:3]) for p in prompts}) > 40


def test_urls_from_any_base():
    wai, openai = PROTOCOLS["workers-ai"], PROTOCOLS["openai"]
    model = "@cf/meta/llama-3-8b-instruct"
    run = "http://h:1/client/v4/accounts/loadtest/ai/run/@cf/meta/llama-3-8b-instruct"
    assert wai.endpoint("http://h:1", model) == run
    assert wai.endpoint("http://h:1/client/v4/", model) == run
    assert wai.endpoint("http://h:1/client/v4/accounts/loadtest/ai", model) == run
    assert wai.endpoint(run, model) == run
    assert openai.endpoint("http://h:1", model) == "http://h:1/v1/chat/completions"
    base = "http://h:1/client/v4/accounts/x/ai/v1"
    assert openai.endpoint(base, model) == base + "/chat/completions"


def test_events_of_both_wire_formats():
    wai, openai = PROTOCOLS["workers-ai"], PROTOCOLS["openai"]
    assert wai.parse('{"response":"Hi","p":"abc"}').text == "Hi"
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert wai.parse('{"response":"","usage":' + str(usage).replace("'", '"') + "}").usage == usage
    failure = '{"response":"","result":{},"success":false,"errors":[{"code":3040,"message":"busy"}],"messages":[]}'
    assert wai.parse(failure).error == ("3040", "busy")
    assert wai.parse("[DONE]").done and openai.parse("[DONE]").done
    role = openai.parse('{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}')
    assert role.text == "" and role.token  # sent with the first token: it counts for TTFT
    assert not openai.parse('{"choices":[],"usage":{"completion_tokens":2}}').token
    assert wai.parse('{"response":"Hi"}').token and not wai.parse('{"response":""}').token
    assert openai.parse('{"choices":[{"index":0,"delta":{"content":"Hi"}}]}').text == "Hi"
    assert openai.parse('{"choices":[],"usage":{"completion_tokens":2}}').usage == {"completion_tokens": 2}
    assert openai.parse('{"error":{"message":"bad","type":"BadRequestError","code":400}}').error == (
        "400",
        "bad",
    )
    assert openai.error(b'{"error":{"message":"no","type":"invalid_request_error","code":null}}') == (
        "invalid_request_error",
        "no",
    )
    assert wai.error(b"<html>oops</html>") == ("", "<html>oops</html>")


def test_anthropics_messages_events():
    anthropic = PROTOCOLS["anthropic"]
    assert anthropic.endpoint("http://h:1", "m") == "http://h:1/v1/messages"
    assert (
        anthropic.endpoint("http://h:1/client/v4/accounts/x/ai/v1", "m")
        == "http://h:1/client/v4/accounts/x/ai/v1/messages"
    )
    assert not anthropic.parse('{"type":"message_start","message":{}}').token
    delta = anthropic.parse('{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}')
    assert delta.text == "Hi" and delta.token
    spent = (
        '{"type":"message_delta","delta":{},"usage":{"input_tokens":3,"cache_read_input_tokens":2,"output_tokens":4}}'
    )
    assert anthropic.parse(spent).usage == {"prompt_tokens": 5, "completion_tokens": 4}
    assert anthropic.parse('{"type":"message_stop"}').done
    failure = '{"type":"error","error":{"type":"overloaded_error","message":"busy"}}'
    assert anthropic.parse(failure).error == ("overloaded_error", "busy")
    assert anthropic.error(failure.encode()) == ("overloaded_error", "busy")
    prompt = chat_prompts(8)[0]
    body = anthropic.body(prompt, "m", Sampling(temperature=2.0))
    assert body["temperature"] == 1.0 and body["stream"] is True and body["max_tokens"] == 8
    assert all(m["role"] != "system" for m in body["messages"])


def test_the_responses_apis_events():
    responses = PROTOCOLS["responses"]
    assert responses.endpoint("http://h:1", "m") == "http://h:1/v1/responses"
    assert responses.endpoint("http://h:1/v1", "m") == "http://h:1/v1/responses"
    assert not responses.parse('{"type":"response.created","sequence_number":0,"response":{}}').token
    delta = responses.parse('{"type":"response.output_text.delta","delta":"Hi","sequence_number":3}')
    assert delta.text == "Hi" and delta.token
    done = responses.parse('{"type":"response.completed","response":{"usage":{"input_tokens":5,"output_tokens":4}}}')
    assert done.done and done.usage == {"prompt_tokens": 5, "completion_tokens": 4}
    assert responses.parse('{"type":"error","code":"3040","message":"busy"}').error == ("3040", "busy")
    body = responses.body(chat_prompts(8)[0], "m", Sampling(temperature=0.0))
    assert body["max_output_tokens"] == 8 and body["store"] is False and body["stream"] is True


def test_request_bodies():
    prompt = chat_prompts(8)[0]
    body = PROTOCOLS["openai"].body(prompt, "m", Sampling(temperature=0.0, ignore_eos=True))
    assert body["stream_options"] == {"include_usage": True} and body["ignore_eos"] is True
    assert body["model"] == "m" and body["max_tokens"] == 8 and body["temperature"] == 0.0
    body = PROTOCOLS["workers-ai"].body(prompt, "m", Sampling(temperature=0.0, ignore_eos=True))
    assert body == {"messages": prompt.messages, "max_tokens": 8, "stream": True, "temperature": 0.0}
