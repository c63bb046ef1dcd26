"""The GPU check's load series: wai against `vllm serve` of the same vLLM on the same engine arguments.

Closed-loop streams with `wai loadtest`'s runner, interleaved round by round between the servers, and the
front-end CPU meter of `make bench-frontend` (benchmarks/frontend.py): per series and level, output
tokens/s, TTFT and ITL, and the CPU of each server's front-end processes per token streamed. vLLM's side
asks for `ignore_eos`; wai's Workers AI endpoint has none, and random weights almost never pick one of
Llama 3's two end tokens among 128,256, so both generate the same count: each row says how many it got.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

VLLM, WAI = "vllm-serve", "wai-run"


@dataclass(frozen=True)
class Scale:
    """How much load: the real one on a GPU, a small one for the rehearsal on a CPU."""

    levels: tuple[int, ...]
    requests: tuple[int, ...]  # per series at each level
    output_tokens: int
    lora_streams: int
    api_processes_streams: int
    warmup: int

    def requests_at(self, streams: int) -> int:
        return self.requests[self.levels.index(streams)] if streams in self.levels else 2 * streams


# On one H100 with Llama 3 8B: 256 tokens take about 2 s at one stream and 8 s at 256, so each level is one
# or two waves of requests.
GPU_SCALE = Scale(
    levels=(1, 8, 64, 256),
    requests=(2, 16, 64, 256),
    output_tokens=256,
    lora_streams=64,
    api_processes_streams=256,
    warmup=4,
)
REHEARSAL_SCALE = Scale(
    levels=(1, 2, 4), requests=(2, 4, 4), output_tokens=8, lora_streams=4, api_processes_streams=4, warmup=1
)


def prompts(count: int, output_tokens: int, adapters: list[str] | None = None) -> list[Any]:
    """Distinct short prompts (no shared prefix), each with one of `adapters` in turn when given."""
    from dataclasses import replace

    from loadtests.prompts import synthetic_prompts

    made = synthetic_prompts(count, 64, output_tokens)
    if adapters:
        made = [replace(p, lora=adapters[i % len(adapters)]) for i, p in enumerate(made)]
    return made


def measure(
    servers: dict[str, tuple[int, str]],
    model: str,
    levels: list[int],
    requests: list[int],
    scale: Scale,
    adapters: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Each level, every server in `servers` (series label -> (pid, base URL)), with their costs."""
    from benchmarks.frontend import Meter, default_processes, series_row
    from loadtests.protocols import Sampling, Target
    from loadtests.runner import LoadPlan, run_load
    from loadtests.stats import summarize

    protocols = {VLLM: "openai"}
    targets = [Target(label, url, protocols.get(label, "workers-ai"), model) for label, (_, url) in servers.items()]
    processes = 1 if max(levels) < 64 else default_processes()
    plan = LoadPlan(
        mode="closed",
        levels=[float(level) for level in levels],
        num_requests=requests,
        warmup=scale.warmup,
        light=True,
        processes=processes,
    )
    meter = Meter(servers, [])
    sampling = Sampling(temperature=0.0, ignore_eos=True)  # only the OpenAI protocol sends ignore_eos
    results = asyncio.run(
        run_load(targets, prompts(max(requests), scale.output_tokens, adapters), sampling, plan, watch=meter.watch)
    )
    rows = []
    for result in results:
        series = {
            t.label: series_row(
                summarize(result.records[t.label], result.busy_s[t.label]),
                meter.costs[(t.label, result.level)],
                processes,
            )
            for t in targets
        }
        rows.append({"streams": int(result.level), "series": {k: brief(v) for k, v in series.items()}})
    return rows


def brief(row: dict[str, Any]) -> dict[str, Any]:
    """The figures the report shows for one series at one level."""
    return {
        "requests": row["requests"],
        "failed": row["failed"],
        "mean_output_tokens": row["mean_output_tokens"],
        "output_tokens_per_s": round(row["output_throughput"], 1),
        "ttft_ms": row["ttft_ms"],
        "itl_ms": row["itl_ms"],
        "front_end_cpu_us_per_token": row["front_end_cpu_us_per_token"],
    }


def problems(levels: list[dict[str, Any]], output_tokens: int, min_ratio: float | None) -> list[str]:
    """What breaks the verdict: a failed request, a series short of its tokens, or wai's tokens/s below
    `min_ratio` x vLLM's at a level (None: not judged, as in a rehearsal on a CPU)."""
    found = []
    for level in levels:
        streams, series = level["streams"], level["series"]
        for label, row in series.items():
            if row["failed"]:
                found.append(f"{label} at {streams} streams: {row['failed']} of {row['requests']} requests failed")
            elif row["mean_output_tokens"] is None or row["mean_output_tokens"] < output_tokens:
                found.append(
                    f"{label} at {streams} streams: {row['mean_output_tokens']} tokens a request, not {output_tokens}"
                )
        if VLLM in series and WAI in series:
            ratio = series[WAI]["output_tokens_per_s"] / series[VLLM]["output_tokens_per_s"]
            level["wai_over_vllm"] = round(ratio, 3)
            if min_ratio is not None and ratio < min_ratio:
                found.append(f"wai's tokens/s at {streams} streams is {ratio:.2f} x vllm serve's (below {min_ratio:g})")
    return found
