"""OpenAI's legacy completions endpoint on the real engine: the openai SDK and raw HTTP."""

from __future__ import annotations

import openai
import pytest

from tests.support.repo import STAND_IN

PROMPT = "The capital of France is"
PATHS = ["/v1", "/client/v4/accounts/test-account/ai/v1"]


@pytest.fixture(params=PATHS)
def sdk(server, request):
    with openai.OpenAI(base_url=server.base_url + request.param, api_key=server.api_key, max_retries=0) as client:
        yield client


def test_text_in_text_out_with_the_prompt_as_it_is(sdk, client, server, tokenizer):
    answer = sdk.completions.create(model=STAND_IN, prompt=PROMPT, max_tokens=8, temperature=0)
    assert answer.object == "text_completion" and answer.id.startswith("cmpl-")
    assert answer.model == STAND_IN and answer.choices[0].finish_reason in ("stop", "length")
    # No chat template: the prompt's own tokens (with the tokenizer's BOS), as `raw` on the run endpoint.
    assert answer.usage.prompt_tokens == len(tokenizer.encode(PROMPT))
    native = client.post(server.run_url(), json={"prompt": PROMPT, "raw": True, "max_tokens": 8, "temperature": 0})
    assert native.json()["result"]["response"] == answer.choices[0].text
    assert native.json()["result"]["usage"]["completion_tokens"] == answer.usage.completion_tokens


def test_stream_joins_to_the_sync_text_with_usage(sdk):
    sync = sdk.completions.create(model=STAND_IN, prompt=PROMPT, max_tokens=12, temperature=1, seed=7)
    chunks = list(
        sdk.completions.create(
            model=STAND_IN,
            prompt=PROMPT,
            max_tokens=12,
            temperature=1,
            seed=7,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(chunk.object == "text_completion" and chunk.id == chunks[0].id for chunk in chunks)
    assert "".join(chunk.choices[0].text for chunk in chunks if chunk.choices) == sync.choices[0].text
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == sync.usage.completion_tokens


def test_logprobs_per_token_with_offsets(sdk):
    answer = sdk.completions.create(model=STAND_IN, prompt=PROMPT, max_tokens=6, temperature=0, logprobs=2)
    choice = answer.choices[0]
    logprobs = choice.logprobs
    assert len(logprobs.tokens) == answer.usage.completion_tokens == len(logprobs.token_logprobs)
    assert "".join(logprobs.tokens) == choice.text
    assert logprobs.text_offset == [sum(len(t) for t in logprobs.tokens[:i]) for i in range(len(logprobs.tokens))]
    # Greedy: the chosen token is the most likely one, and at most 2 alternatives are listed.
    for token, chosen, top in zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True):
        assert 1 <= len(top) <= 2 and max(top.values()) == pytest.approx(chosen) and top[token] == pytest.approx(chosen)


def test_several_choices_and_stop(sdk):
    answer = sdk.completions.create(
        model=STAND_IN, prompt="Count: 1, 2, 3,", max_tokens=12, n=2, temperature=1, seed=3, stop=[","]
    )
    assert [choice.index for choice in answer.choices] == [0, 1]
    assert all("," not in choice.text for choice in answer.choices)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("echo", True),
        ("suffix", "."),
        ("best_of", 3),
        ("logprobs", 6),
        ("prompt", ["a", "b"]),
        ("prompt", [1, 2, 3]),
        ("temperature", 2.5),
    ],
)
def test_unsupported_or_out_of_range_is_400_naming_the_field(client, field, value):
    response = client.post("/v1/completions", json={"model": STAND_IN, "prompt": PROMPT, field: value})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"], error["type"]) == (field, "5006", "invalid_request_error")


def test_client_disconnect_aborts_the_engine_request(server):
    body = {"model": STAND_IN, "prompt": "Once upon a time", "stream": True, "max_tokens": 4000, "temperature": 2}
    with server.client() as client, client.stream("POST", "/v1/completions", json=body) as response:
        assert response.status_code == 200
        next(response.iter_lines())
        assert server.metric("vllm:num_requests_running") >= 1
    assert server.engine_running() == 0
