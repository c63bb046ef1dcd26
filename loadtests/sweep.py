"""`wai loadtest --sweep`: from one stream up to saturation, found by the load generator itself.

    wai loadtest --sweep --url http://127.0.0.1:8000 --max-concurrency 256 --output-tokens 128

A closed loop at 1, 2, 4, ... streams up to `--max-concurrency`. After each level every target's
knee is judged on the levels so far (loadtests/knee.py); a target's sweep ends at saturation (far
enough past its knee, failed requests, or falling throughput) and the run ends when every target's
has, or at the cap. With several targets each level is interleaved round by round as in any run,
so every target is measured at every level until the last one saturates.

While each target is driven its `/metrics` is read (loadtests/engine_metrics.py): the engine's
running and waiting requests, KV cache usage and preemptions go into the report beside each level.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from loadtests.client import RequestRecord
from loadtests.engine_metrics import EngineLevel, EngineWatch
from loadtests.knee import Knee, LevelPoint, find_knee
from loadtests.prompts import Prompt
from loadtests.protocols import Sampling, Target
from loadtests.runner import LevelResult, LoadPlan, run_load
from loadtests.stats import summarize

WAVES = 8  # requests per stream at least, at each level: the drain at its end (streams finishing
# one by one) then costs a few per cent of its throughput, well under the knee's 10 % bar


def requests_per_level(levels: list[int], requests: int) -> list[int]:
    """`requests` at each level, but at least WAVES per stream in flight."""
    return [max(requests, WAVES * level) for level in levels]


@dataclass(frozen=True)
class SweepSettings:
    min_gain: float
    past_knee: int
    scrape_interval_s: float
    metrics: dict[str, tuple[str, dict[str, str]]]  # target label -> /metrics URL and its headers


@dataclass
class SweepResult:
    results: list[LevelResult]
    engine: dict[float, dict[str, EngineLevel]]  # level -> target label -> what its /metrics said
    knees: dict[str, Knee]  # per target: at saturation, or as the last level left it
    stopped: str  # why the sweep ended


def point(level: float, summary: dict[str, Any]) -> LevelPoint:
    return LevelPoint(
        concurrency=level,
        output_throughput=summary["output_throughput"],
        ttft_p50_ms=summary["ttft_ms"]["p50"],
        itl_p50_ms=summary["itl_ms"]["p50"],
        failed=summary["failed"],
    )


async def sweep(
    targets: list[Target],
    prompts: list[Prompt],
    sampling: Sampling,
    plan: LoadPlan,
    settings: SweepSettings,
    on_record: Callable[[RequestRecord], None] | None = None,
    on_level: Callable[[float], None] | None = None,
) -> SweepResult:
    watches = {t.label: EngineWatch(*settings.metrics[t.label], settings.scrape_interval_s) for t in targets}
    engine: dict[float, dict[str, EngineLevel]] = {}
    points: dict[str, list[LevelPoint]] = {t.label: [] for t in targets}
    knees: dict[str, Knee] = {}
    frozen: set[str] = set()  # targets whose sweep already saturated: their knee stays as found

    @asynccontextmanager
    async def watch(target: Target, level: float) -> AsyncIterator[None]:
        readings = engine.setdefault(level, {}).setdefault(target.label, EngineLevel(watches[target.label].url))
        async with watches[target.label].during(readings):
            yield

    def after_level(result: LevelResult) -> bool:
        for target in targets:
            if target.label in frozen:
                continue
            points[target.label].append(
                point(result.level, summarize(result.records[target.label], result.busy_s[target.label]))
            )
            knees[target.label] = find_knee(points[target.label], settings.min_gain, settings.past_knee)
            if knees[target.label].saturated:
                frozen.add(target.label)
        return len(frozen) < len(targets)

    try:
        results = await run_load(
            targets, prompts, sampling, plan, on_record, on_level, watch=watch, after_level=after_level
        )
    finally:
        for w in watches.values():
            await w.aclose()
    if len(frozen) == len(targets):
        stopped = "every target saturated" if len(targets) > 1 else "saturated"
    else:
        stopped = f"reached --max-concurrency {max(plan.levels):g}"
    return SweepResult(results, engine, knees, stopped)
