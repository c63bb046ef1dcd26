"""`wai loadtest --soak`: a long closed loop with cancellations, and three verdicts at its end.

    wai loadtest --soak --url http://127.0.0.1:8000 --pid 1234 --concurrency 4 --duration 1800 \
        --cancel-rate 0.2 --output-tokens 32

While the load runs, the resident memory of the server's process and all its children (vLLM's
engine core is a child process) is sampled with psutil; after the load, the target's `/metrics` is
polled until vLLM's running and waiting counts are back to 0. The run passes when

- errors: no request that was not cancelled on purpose failed (and some completed);
- drained: `vllm:num_requests_running` and `vllm:num_requests_waiting` (summed over their labels)
  are both 0 within `--drain-timeout` seconds of the end of the load;
- memory: the resident memory at the end of the load is less than `--max-rss-growth` percent above
  the one sampled `--rss-warmup` seconds into it (both under the same load, so that caches and
  pools filled while warming up are not counted as growth).

The verdicts go into report.json (`soak`) and report.md, and the command exits 1 when one fails.
`--serve CMD` starts the server itself (`{port}` in CMD and in --url becomes a free loopback port),
waits for its /readyz, watches its PID, and stops it with SIGTERM at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from loadtests import report
from loadtests.client import RequestRecord
from loadtests.engine_metrics import RUNNING, WAITING, metrics_url
from loadtests.progress import Progress
from loadtests.prompts import Prompt
from loadtests.protocols import Sampling, Target
from loadtests.runner import LevelResult, LoadPlan, run_load
from loadtests.servers import free_port, running
from loadtests.stats import SLO

MiB = 2**20


# ---------------------------------------------------------------- verdicts (pure)


@dataclass(frozen=True)
class Verdict:
    name: str  # errors, drained, memory
    passed: bool
    detail: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def errors_verdict(summary: dict[str, Any]) -> Verdict:
    """No request failed except those cancelled on purpose, and at least one completed."""
    completed, cancelled, failed = summary["completed"], summary.get("cancelled", 0), summary["failed"]
    counts = f"{completed} completed, {cancelled} cancelled, {failed} failed"
    if failed:
        return Verdict("errors", False, f"{counts}: errors {summary['errors']}")
    if not completed:
        return Verdict("errors", False, f"{counts}: no request completed")
    return Verdict("errors", True, counts)


@dataclass
class Drain:
    """The engine's counts after the load: the last values read, and how long it took to read 0."""

    running: float | None = None
    waiting: float | None = None
    waited_s: float = 0.0
    problem: str | None = None  # why /metrics could not be read, when it could not

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def drain_verdict(drain: Drain, timeout_s: float) -> Verdict:
    if drain.running is None or drain.waiting is None:
        return Verdict("drained", False, drain.problem or f"{RUNNING} or {WAITING} is not in /metrics")
    counts = f"running {drain.running:g}, waiting {drain.waiting:g}"
    if drain.running or drain.waiting:
        return Verdict("drained", False, f"{counts} still {timeout_s:g} s after the load")
    return Verdict("drained", True, f"{counts}, {drain.waited_s:.1f} s after the load")


def rss_growth_pct(baseline: int, end: int) -> float:
    """How much larger `end` is than `baseline`, in percent (negative when it shrank)."""
    if baseline <= 0:
        raise ValueError("the baseline resident memory must be positive")
    return (end - baseline) / baseline * 100


@dataclass(frozen=True)
class RssSample:
    t_s: float  # seconds since the load started
    rss: int  # bytes, summed over the process tree
    processes: int

    def as_json(self) -> dict[str, Any]:
        return {"t_s": round(self.t_s, 1), "rss_mib": round(self.rss / MiB, 1), "processes": self.processes}


def memory_verdict(baseline: RssSample | None, end: RssSample | None, max_growth_pct: float) -> Verdict:
    if baseline is None or end is None:
        return Verdict("memory", False, "the server's process was gone before its memory could be sampled")
    growth = rss_growth_pct(baseline.rss, end.rss)
    detail = (
        f"RSS {baseline.rss / MiB:,.0f} MiB at {baseline.t_s:.0f} s -> {end.rss / MiB:,.0f} MiB at "
        f"{end.t_s:.0f} s ({growth:+.1f} %, limit {max_growth_pct:g} %), {end.processes} processes"
    )
    return Verdict("memory", growth < max_growth_pct, detail)


def metric_sum(text: str, name: str) -> float | None:
    """A Prometheus series summed over its labels, from the text format; None when absent."""
    values = [s.value for family in text_string_to_metric_families(text) for s in family.samples if s.name == name]
    return sum(values) if values else None


def default_rss_warmup(duration_s: float) -> float:
    """A fifth of the run, at most 5 minutes: long enough for the engine's pools to fill."""
    return min(300.0, duration_s / 5)


def problems(args: argparse.Namespace) -> list[str]:
    """What is wrong with the options of a soak, if anything."""
    found = []
    if len(args.url) != 1:
        found.append("--soak takes one --url")
    if args.rate:
        found.append("--soak runs a closed loop: give --concurrency, not --rate")
    if args.sweep:
        found.append("--soak runs one level: give --concurrency, not --sweep")
    if args.concurrency and len(args.concurrency) != 1:
        found.append("--soak takes one --concurrency")
    if not args.duration:
        found.append("--soak needs --duration")
    if (args.pid is None) == (args.serve is None):
        found.append("--soak needs the server's --pid, or --serve CMD to start it")
    warmup = args.rss_warmup if args.rss_warmup is not None else default_rss_warmup(args.duration or 0)
    if args.duration and not 0 <= warmup < args.duration:
        found.append("--rss-warmup must be shorter than --duration")
    if not 0 < args.max_rss_growth:
        found.append("--max-rss-growth must be positive")
    return found


# ---------------------------------------------------------------- measuring


def tree_rss(pid: int) -> tuple[int, int] | None:
    """Resident bytes of a process and all its descendants, and how many there are; None if it is gone."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
        total = root.memory_info().rss
    except psutil.Error:
        return None
    counted = 1
    for child in processes[1:]:
        try:
            total += child.memory_info().rss
            counted += 1
        except psutil.Error:  # a child that ended between the listing and the reading
            pass
    return total, counted


@dataclass
class MemoryWatch:
    """RSS samples of the server's process tree while the load runs: one at `warmup_s` (the
    baseline), one every `interval_s` after it, and one when the load ends."""

    pid: int
    warmup_s: float
    interval_s: float
    started: float = field(default_factory=time.perf_counter)
    samples: list[RssSample] = field(default_factory=list)
    baseline: RssSample | None = None
    end: RssSample | None = None

    def sample(self) -> RssSample | None:
        measured = tree_rss(self.pid)
        if measured is None:
            return None
        taken = RssSample(time.perf_counter() - self.started, *measured)
        self.samples.append(taken)
        return taken

    async def watch(self) -> None:
        """Runs until cancelled."""
        await asyncio.sleep(max(0.0, self.warmup_s - (time.perf_counter() - self.started)))
        self.baseline = self.sample()
        while True:
            await asyncio.sleep(self.interval_s)
            self.sample()

    def as_json(self, max_growth_pct: float) -> dict[str, Any]:
        after = [s.rss for s in self.samples if self.baseline and s.t_s >= self.baseline.t_s]
        return {
            "pid": self.pid,
            "warmup_s": self.warmup_s,
            "baseline": self.baseline.as_json() if self.baseline else None,
            "end": self.end.as_json() if self.end else None,
            "growth_pct": rss_growth_pct(self.baseline.rss, self.end.rss) if self.baseline and self.end else None,
            "max_growth_pct": max_growth_pct,
            "peak_mib": round(max(after) / MiB, 1) if after else None,
            "median_after_warmup_mib": round(statistics.median(after) / MiB, 1) if after else None,
            "samples": [s.as_json() for s in self.samples],
        }


async def wait_drained(url: str, headers: dict[str, str], timeout_s: float) -> Drain:
    """Poll /metrics until the engine runs and queues nothing, or `timeout_s` seconds passed."""
    began = time.perf_counter()
    drain = Drain()
    async with httpx.AsyncClient(timeout=10) as client:
        while True:
            try:
                response = await client.get(url, headers=headers)
                if response.status_code != 200:
                    drain.problem = f"GET {url} answered {response.status_code}"
                else:
                    drain.problem = None
                    drain.running = metric_sum(response.text, RUNNING)
                    drain.waiting = metric_sum(response.text, WAITING)
            except httpx.HTTPError as exc:
                drain.problem = f"GET {url} failed: {exc!r}"
            except ValueError as exc:
                drain.problem = f"GET {url}: not the Prometheus text format ({exc})"
            drain.waited_s = time.perf_counter() - began
            settled = drain.problem is None and drain.running == 0 and drain.waiting == 0
            if settled or drain.waited_s >= timeout_s:
                return drain
            await asyncio.sleep(0.5)


# ---------------------------------------------------------------- a server of its own (--serve)


def substitute_port(args: argparse.Namespace) -> None:
    """With --serve, `{port}` in the command and in --url becomes one free loopback port."""
    if args.serve and "{port}" in args.serve + "".join(args.url):
        port = str(free_port())
        args.serve = args.serve.replace("{port}", port)
        args.url = [u.replace("{port}", port) for u in args.url]


# ---------------------------------------------------------------- the run


@dataclass
class SoakResult:
    results: list[LevelResult]
    memory: MemoryWatch
    drain: Drain
    load_s: float


async def soak(
    target: Target,
    prompts: list[Prompt],
    sampling: Sampling,
    plan: LoadPlan,
    pid: int,
    rss_warmup_s: float,
    drain_timeout_s: float,
    metrics_headers: dict[str, str],
    metrics: str,
    on_record: Callable[[RequestRecord], None] | None = None,
    on_level: Callable[[float], None] | None = None,
) -> SoakResult:
    assert plan.duration_s is not None, "a soak runs for a duration"
    memory = MemoryWatch(pid, rss_warmup_s, interval_s=max(2.0, plan.duration_s / 100))
    watcher = asyncio.create_task(memory.watch())
    try:
        results = await run_load([target], prompts, sampling, plan, on_record=on_record, on_level=on_level)
        memory.end = memory.sample()
    finally:
        watcher.cancel()
    load_s = time.perf_counter() - memory.started
    drain = await wait_drained(metrics, metrics_headers, drain_timeout_s)
    return SoakResult(results, memory, drain, load_s)


def verdicts(summary: dict[str, Any], result: SoakResult, drain_timeout_s: float, max_growth: float) -> list[Verdict]:
    return [
        errors_verdict(summary),
        drain_verdict(result.drain, drain_timeout_s),
        memory_verdict(result.memory.baseline, result.memory.end, max_growth),
    ]


def run(
    args: argparse.Namespace,
    targets: list[Target],
    plan: LoadPlan,
    prompts: list[Prompt],
    sampling: Sampling,
    slo: SLO | None,
    out: Path,
    options: dict[str, Any],
    metrics_source: tuple[str, dict[str, str]],
) -> int:
    """The soak from parsed options to reports and an exit status: 0 when every verdict passed.
    `metrics_source`: the target's /metrics URL and the headers to read it with."""
    if args.serve:
        ready = metrics_url(targets[0].url).removesuffix("/metrics") + "/readyz"
        try:
            with running(
                "the server", shlex.split(args.serve), ready, out / "server.log", args.serve_timeout
            ) as process:
                return _run(args, targets, plan, prompts, sampling, slo, out, options, metrics_source, process.pid)
        except RuntimeError as exc:
            print(f"wai loadtest --soak: {exc}", file=sys.stderr)
            return 1
    return _run(args, targets, plan, prompts, sampling, slo, out, options, metrics_source, args.pid)


def _run(args, targets, plan, prompts, sampling, slo, out, options, metrics_source, pid: int) -> int:
    if tree_rss(pid) is None:
        print(f"wai loadtest --soak: no process with pid {pid}", file=sys.stderr)
        return 2
    target = targets[0]
    warmup = args.rss_warmup if args.rss_warmup is not None else default_rss_warmup(plan.duration_s)
    metrics, headers = metrics_source
    with Progress(targets, plan, enabled=not args.no_progress) as progress:
        result = asyncio.run(
            soak(
                target,
                prompts,
                sampling,
                plan,
                pid,
                warmup,
                args.drain_timeout,
                headers,
                metrics,
                on_record=progress.record,
                on_level=progress.level,
            )
        )
    built = report.build(targets, plan, result.results, slo, options)
    summary = built["levels"][0]["summaries"][target.label]
    found = verdicts(summary, result, args.drain_timeout, args.max_rss_growth)
    built["soak"] = {
        "passed": all(v.passed for v in found),
        "verdicts": [v.as_json() for v in found],
        "load_s": round(result.load_s, 1),
        "requests": {k: summary[k] for k in ("requests", "completed", "cancelled", "failed", "errors")},
        "cancel_rate": plan.cancel_rate,
        "drain": {**result.drain.as_json(), "timeout_s": args.drain_timeout, "metrics_url": metrics},
        "memory": result.memory.as_json(args.max_rss_growth),
    }
    files = report.write(built, out)
    Progress.print_summary(built)
    for v in found:
        print(f"soak {v.name}: {'PASS' if v.passed else 'FAIL'}: {v.detail}")
    print(f"reports: {', '.join(str(f) for f in files)}")
    return 0 if built["soak"]["passed"] else 1
