"""Statistics of a run: latency distributions, throughput, goodput under an SLO, errors by code.

Definitions (the same as `vllm bench serve`, so that the two tools can be compared):
- time to first token (TTFT): request sent -> first event carrying output (a Workers AI event with
  text; an OpenAI chunk with a choice, even one whose text is empty, as vLLM's benchmark counts);
- inter-token latency (ITL): the gaps between successive output events, pooled over all requests;
- time per output token (TPOT): (last output event - first) / (output tokens - 1), per request;
- end-to-end (E2E): request sent -> end of the stream;
- throughput: completed requests, or output tokens from `usage`, per second of wall time;
- goodput: completed requests per second that met every bound of the SLO;
- cancelled: requests the client dropped on purpose (`--cancel-rate`); neither completed nor failed,
  and left out of every latency, token count and throughput.
Latencies are reported in milliseconds; percentiles interpolate linearly (numpy's default).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from loadtests.client import RequestRecord

PERCENTILES = (50, 90, 95, 99)
LATENCIES = ("ttft", "tpot", "itl", "e2e")
LATENCY_NAMES = {
    "ttft": "time to first token",
    "tpot": "time per output token",
    "itl": "inter-token latency",
    "e2e": "end-to-end latency",
}


@dataclass(frozen=True)
class SLO:
    """Service-level bounds in milliseconds; a request is good when it meets every bound given."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None

    @classmethod
    def parse(cls, text: str) -> SLO:
        """`ttft=500,tpot=50` (milliseconds); names: ttft, tpot, e2e."""
        bounds: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, value = part.partition("=")
            if not sep or name.strip() not in ("ttft", "tpot", "e2e"):
                raise ValueError(f"bad SLO bound {part!r}: expected ttft=MS, tpot=MS or e2e=MS")
            bounds[f"{name.strip()}_ms"] = float(value)
        return cls(**bounds)

    def met_by(self, record: RequestRecord) -> bool:
        if not record.ok:
            return False
        checks = ((self.ttft_ms, record.ttft), (self.tpot_ms, record.tpot), (self.e2e_ms, record.e2e))
        # A one-token reply has no TPOT: nothing came after its first token to be late.
        return all(bound is None or value is None or value * 1000 <= bound for bound, value in checks)

    def as_json(self) -> dict[str, float]:
        return {k: v for k, v in vars(self).items() if v is not None}


def distribution(values_s: Sequence[float]) -> dict[str, float | int | None]:
    """Mean and percentiles in milliseconds of values given in seconds."""
    values = np.asarray(values_s, dtype=float) * 1000
    if values.size == 0:
        return {"count": 0, "mean": None, **{f"p{p}": None for p in PERCENTILES}}
    return {
        "count": int(values.size),
        "mean": float(values.mean()),
        **{f"p{p}": float(np.percentile(values, p)) for p in PERCENTILES},
    }


def latencies(records: Iterable[RequestRecord], metric: str) -> list[float]:
    """Every value of one latency metric over the completed requests, in seconds."""
    ok = [r for r in records if r.ok]
    if metric == "itl":
        return [gap for r in ok for gap in r.itl]
    values = (getattr(r, metric) for r in ok)
    return [v for v in values if v is not None]


def summarize(records: Sequence[RequestRecord], duration_s: float, slo: SLO | None = None) -> dict[str, Any]:
    """The summary of one target at one load level, over `duration_s` seconds of wall time."""
    ok = [r for r in records if r.ok]
    output_tokens = sum(r.output_tokens or 0 for r in ok)
    prompt_tokens = sum(r.prompt_tokens or 0 for r in ok)
    per_second = (lambda n: n / duration_s) if duration_s > 0 else (lambda n: 0.0)
    cancelled = sum(1 for r in records if r.cancelled)
    summary: dict[str, Any] = {
        "requests": len(records),
        "completed": len(ok),
        "cancelled": cancelled,
        "failed": len(records) - len(ok) - cancelled,
        "duration_s": duration_s,
        "prompt_tokens": prompt_tokens,
        "output_tokens": output_tokens,
        "mean_output_tokens": output_tokens / len(ok) if ok else None,
        "request_throughput": per_second(len(ok)),
        "output_throughput": per_second(output_tokens),
        "total_token_throughput": per_second(prompt_tokens + output_tokens),
    }
    if slo is not None:
        good = sum(1 for r in records if slo.met_by(r))
        summary["good_requests"] = good
        summary["goodput"] = per_second(good)
    for metric in LATENCIES:
        summary[f"{metric}_ms"] = distribution(latencies(records, metric))
    summary["errors"] = dict(sorted(Counter(r.error_code for r in records if not r.ok and not r.cancelled).items()))
    return summary
