"""The load generator's statistics on a recorded set of timings, checked against values worked by hand."""

import pytest

from loadtests.client import RequestRecord
from loadtests.compare import ratios
from loadtests.stats import SLO, distribution, summarize

EXACT = {"rel": 1e-12, "abs": 1e-12}


def recorded() -> list[RequestRecord]:
    """Three completed requests and two failures, at concurrency 4, over 2 s of wall time."""
    return [
        RequestRecord(
            "A",
            4,
            "p1",
            0.0,
            ok=True,
            status=200,
            ttft=0.125,
            itl=[0.25, 0.25],
            last_token=0.625,
            e2e=0.75,
            prompt_tokens=10,
            output_tokens=3,
        ),
        RequestRecord(
            "A",
            4,
            "p2",
            0.0,
            ok=True,
            status=200,
            ttft=0.25,
            itl=[0.125],
            last_token=0.375,
            e2e=0.5,
            prompt_tokens=20,
            output_tokens=2,
        ),
        RequestRecord(
            "A",
            4,
            "p3",
            0.1,
            ok=True,
            status=200,
            ttft=0.5,
            itl=[],
            last_token=0.5,
            e2e=0.5,
            prompt_tokens=5,
            output_tokens=1,
        ),
        RequestRecord("A", 4, "p4", 0.2, ok=False, status=429, error_code="429:3040", e2e=0.01),
        RequestRecord("A", 4, "p5", 0.3, ok=False, status=200, error_code="stream:5006", ttft=0.1, e2e=0.2),
    ]


def test_time_per_output_token_is_the_decode_time_over_the_tokens_after_the_first():
    r1, r2, r3, *_ = recorded()
    assert r1.tpot == pytest.approx(0.25, **EXACT)
    assert r2.tpot == pytest.approx(0.125, **EXACT)
    assert r3.tpot is None  # one token: nothing after the first


def test_summary_of_recorded_timings_is_exact():
    s = summarize(recorded(), duration_s=2.0)
    assert (s["requests"], s["completed"], s["failed"]) == (5, 3, 2)
    assert (s["prompt_tokens"], s["output_tokens"]) == (35, 6)
    assert s["mean_output_tokens"] == 2.0
    assert s["request_throughput"] == 1.5
    assert s["output_throughput"] == 3.0
    assert s["total_token_throughput"] == 20.5
    assert s["errors"] == {"429:3040": 1, "stream:5006": 1}
    # Failed requests never count towards latencies, even one that saw a first token.
    expected = {
        "ttft_ms": {"count": 3, "mean": 875 / 3, "p50": 250, "p90": 450, "p95": 475, "p99": 495},
        "itl_ms": {"count": 3, "mean": 625 / 3, "p50": 250, "p90": 250, "p95": 250, "p99": 250},
        "tpot_ms": {"count": 2, "mean": 187.5, "p50": 187.5, "p90": 237.5, "p95": 243.75, "p99": 248.75},
        "e2e_ms": {"count": 3, "mean": 1750 / 3, "p50": 500, "p90": 700, "p95": 725, "p99": 745},
    }
    for metric, values in expected.items():
        for stat, value in values.items():
            assert s[metric][stat] == pytest.approx(value, **EXACT), (metric, stat)


def test_goodput_counts_completed_requests_within_every_bound():
    s = summarize(recorded(), duration_s=2.0, slo=SLO.parse("ttft=300,tpot=200"))
    # p1 is too slow per token, p3 too slow to start, p4 and p5 failed: only p2 is good.
    assert s["good_requests"] == 1
    assert s["goodput"] == 0.5
    s = summarize(recorded(), duration_s=2.0, slo=SLO.parse("e2e=600"))
    assert s["good_requests"] == 2


def test_slo_parse_rejects_unknown_bounds():
    assert SLO.parse("ttft=500, tpot=50") == SLO(ttft_ms=500, tpot_ms=50)
    for bad in ("ttft", "latency=5", "ttft=fast"):
        with pytest.raises(ValueError):
            SLO.parse(bad)


def test_an_empty_level_has_no_latencies_and_no_throughput():
    s = summarize([RequestRecord("A", 1, "p", 0.0, error_code="connect_error")], duration_s=0.0)
    assert s["completed"] == 0 and s["output_throughput"] == 0.0 and s["mean_output_tokens"] is None
    assert distribution([]) == {"count": 0, "mean": None, "p50": None, "p90": None, "p95": None, "p99": None}


def test_ratios_are_b_over_a_for_every_figure():
    a = summarize(recorded(), duration_s=2.0)
    b = summarize(recorded(), duration_s=4.0)  # the same requests, served in twice the time
    r = ratios(a, b)
    assert r["output_throughput"] == 0.5 and r["request_throughput"] == 0.5
    assert r["mean_output_tokens"] == 1.0
    assert r["ttft_ms"]["p50"] == 1.0 and r["e2e_ms"]["p99"] == 1.0
