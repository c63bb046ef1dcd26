"""The per-request record's bookkeeping, on hand-made engine deltas (pure logic, no engine)."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from prometheus_client import REGISTRY

from server import errors
from server.config import ModelConfig, Pricing, Weights
from server.engine.types import TextDelta
from server.records import RequestRecord
from server.serving.requests import TextRequest

PRICING = Pricing(
    usd_per_m_input_tokens=0.28,
    usd_per_m_output_tokens=0.83,
    neurons_per_m_input_tokens=25608,
    neurons_per_m_output_tokens=75147,
)


def model(name: str, pricing: Pricing | None = PRICING) -> ModelConfig:
    return ModelConfig(name=name, weights=Weights(path="/nowhere"), pricing=pricing)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def deltas(*completion_counts: int, prompt: int = 10, text: str = "x", queue: float | None = 0.5, cached: int = 0):
    async def generate():
        for count in completion_counts:
            yield TextDelta(
                index=0,
                text=text,
                prompt_tokens=prompt,
                completion_tokens=count,
                queue_seconds=queue,
                cached_tokens=cached,
            )

    return generate()


def run(record: RequestRecord, stream) -> None:
    async def consume():
        async for _ in record.watch(stream):
            pass

    asyncio.run(consume())


def test_tokens_and_cost_are_counted_once_per_token():
    record = RequestRecord("workers_ai")
    record.serve(model("unit/tokens"))
    run(record, deltas(1, 2, 4, 4))  # the last delta only finishes the choice
    assert sample("wai_prompt_tokens_total", model="unit/tokens", lora="none") == 10
    assert sample("wai_generation_tokens_total", model="unit/tokens", lora="none") == 4
    assert sample("wai_workers_ai_cost_usd_total", model="unit/tokens") == pytest.approx((10 * 0.28 + 4 * 0.83) / 1e6)
    assert sample("wai_workers_ai_neurons_total", model="unit/tokens") == pytest.approx((10 * 25608 + 4 * 75147) / 1e6)
    assert sample("wai_requests_in_flight", model="unit/tokens") == 1
    record.finish(200, answered=True)
    assert sample("wai_requests_in_flight", model="unit/tokens") == 0


def test_cached_prompt_tokens_cost_the_cached_input_price():
    cheaper = PRICING.model_copy(
        update={"usd_per_m_cached_input_tokens": 0.1, "neurons_per_m_cached_input_tokens": 9000}
    )
    record = RequestRecord("workers_ai")
    record.serve(model("unit/cached", pricing=cheaper))
    run(record, deltas(1, 2, 4, prompt=10, cached=6))
    assert sample("wai_prompt_tokens_total", model="unit/cached", lora="none") == 10
    assert sample("wai_workers_ai_cost_usd_total", model="unit/cached") == pytest.approx(
        (4 * 0.28 + 6 * 0.1 + 4 * 0.83) / 1e6
    )
    assert sample("wai_workers_ai_neurons_total", model="unit/cached") == pytest.approx(
        (4 * 25608 + 6 * 9000 + 4 * 75147) / 1e6
    )


def test_without_a_cached_price_cached_prompt_tokens_cost_the_input_price():
    record = RequestRecord("workers_ai")
    record.serve(model("unit/cached-unpriced"))
    run(record, deltas(1, 2, 4, prompt=10, cached=6))
    assert sample("wai_workers_ai_cost_usd_total", model="unit/cached-unpriced") == pytest.approx(
        (10 * 0.28 + 4 * 0.83) / 1e6
    )
    assert sample("wai_workers_ai_neurons_total", model="unit/cached-unpriced") == pytest.approx(
        (10 * 25608 + 4 * 75147) / 1e6
    )


def test_finish_counts_once_and_later_deltas_are_ignored():
    record = RequestRecord("openai")
    record.serve(model("unit/once", pricing=None))
    run(record, deltas(1))
    record.finish(200, answered=False)
    record.finish(200, answered=True)
    record.observe(TextDelta(index=0, text="y", prompt_tokens=10, completion_tokens=5))
    labels = {"model": "unit/once", "lora": "none", "protocol": "openai", "status": "200"}
    assert sample("wai_requests_total", **labels, code="3008") == 1
    assert sample("wai_requests_total", **labels, code="none") == 0
    assert sample("wai_generation_tokens_total", model="unit/once", lora="none") == 1
    assert sample("wai_request_duration_seconds_count", model="unit/once", lora="none") == 1
    assert sample("wai_requests_in_flight", model="unit/once") == 0
    assert sample("wai_workers_ai_cost_usd_total", model="unit/once") == 0


def test_an_error_mid_stream_is_the_outcome():
    async def failing():
        yield TextDelta(index=0, text="a", prompt_tokens=3, completion_tokens=1)
        raise errors.service_unavailable()

    record = RequestRecord("workers_ai")
    record.serve(model("unit/error"))
    with pytest.raises(errors.WaiError):
        run(record, failing())
    record.finish(200, answered=True)
    assert (
        sample("wai_requests_total", model="unit/error", lora="none", protocol="workers_ai", status="200", code="3040")
        == 1
    )


def test_inter_token_latency_is_the_mean_gap_per_request():
    record = RequestRecord("workers_ai")
    record.first_token_at, record.last_token_at = 10.0, 13.0
    record.completion_tokens = {0: 4}
    assert record.inter_token_latency() == pytest.approx(1.0)
    record.completion_tokens = {0: 1}
    assert record.inter_token_latency() is None


def test_queue_and_first_token_are_observed_once():
    record = RequestRecord("workers_ai")
    record.serve(model("unit/once-each"))
    run(record, deltas(1, 2, 3, queue=0.25))
    assert sample("wai_request_queue_seconds_count", model="unit/once-each", lora="none") == 1
    assert sample("wai_request_queue_seconds_sum", model="unit/once-each", lora="none") == 0.25
    assert sample("wai_time_to_first_token_seconds_count", model="unit/once-each", lora="none") == 1


def log_of(record: RequestRecord, caplog) -> dict:
    with caplog.at_level(logging.INFO, logger="wai.requests"):
        record.finish(200, answered=True)
    return json.loads(caplog.records[-1].getMessage())


SECRET = TextRequest(prompt="What is the secret word?").as_sent


def test_log_line_leaves_text_out_by_default(caplog):
    record = RequestRecord("workers_ai")
    record.serve(model("unit/log"))
    record.show_input(SECRET)
    run(record, deltas(1, 2, text="swordfish"))
    line = log_of(record, caplog)
    assert "prompt" not in line and "output" not in line
    assert "secret" not in json.dumps(line) and "swordfish" not in json.dumps(line)
    assert (line["prompt_tokens"], line["completion_tokens"], line["code"]) == (10, 2, None)


def test_log_prompts_puts_prompt_and_output_in_the_line(caplog):
    record = RequestRecord("workers_ai", log_prompts=True)
    record.serve(model("unit/log-prompts"))
    record.show_input(SECRET)
    run(record, deltas(1, 2, text="swordfish"))
    line = log_of(record, caplog)
    assert line["prompt"] == "What is the secret word?"
    assert line["output"] == ["swordfishswordfish"]


def test_a_request_counts_under_the_model_that_answers_and_its_adapter():
    record = RequestRecord("openai")
    record.serve(model("unit/other"))
    record.serve(model("unit/other"))  # a gateway's next attempt: still one request in flight
    assert sample("wai_requests_in_flight", model="unit/other") == 1
    record.serve(model("unit/base"))  # a universal request's next step, on another model
    record.use_adapter("meow")
    run(record, deltas(1, 2))
    assert sample("wai_generation_tokens_total", model="unit/base", lora="meow") == 2
    assert sample("wai_requests_in_flight", model="unit/base") == 1
    assert sample("wai_requests_in_flight", model="unit/other") == 0
    record.finish(200, answered=True)
    assert sample("wai_requests_in_flight", model="unit/base") == 0
    assert (
        sample("wai_requests_total", model="unit/base", lora="meow", protocol="openai", status="200", code="none") == 1
    )
