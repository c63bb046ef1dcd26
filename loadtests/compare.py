"""Ratios between targets measured in one run: every figure of a target over the first target's."""

from __future__ import annotations

from typing import Any

from loadtests.stats import LATENCIES, PERCENTILES

THROUGHPUTS = ("request_throughput", "output_throughput", "total_token_throughput", "goodput")
STATISTICS = ("mean", *(f"p{p}" for p in PERCENTILES))


def ratio(b: float | None, a: float | None) -> float | None:
    if a is None or b is None or a == 0:
        return None
    return b / a


def ratios(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """B/A for each throughput, the mean output length, and each latency statistic of two summaries.

    Above 1 means B is faster for throughputs and slower for latencies.
    """
    result: dict[str, Any] = {key: ratio(b.get(key), a.get(key)) for key in THROUGHPUTS if key in a}
    result["mean_output_tokens"] = ratio(b.get("mean_output_tokens"), a.get("mean_output_tokens"))
    for metric in LATENCIES:
        key = f"{metric}_ms"
        result[key] = {s: ratio(b[key][s], a[key][s]) for s in STATISTICS}
    return result
