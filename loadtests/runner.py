"""Drive the load: closed loop (a fixed number of requests in flight) or open loop (Poisson arrivals).

Each load level's work (N requests, or a duration) is split into rounds. In every round each
target gets the same slice of prompts (and, in open loop, the same arrival times), one target
after the other, in an order that rotates from round to round. Targets never share the machine
while measured, and a slow spell of the machine falls on all of them alike, so ratios between
targets stay sound on a noisy machine. With one target and one round this is a plain load test.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Literal

import httpx

from loadtests.client import RequestRecord, http_client, send
from loadtests.prompts import Prompt, cycle
from loadtests.protocols import Sampling, Target

OnRecord = Callable[[RequestRecord], None]
Watch = Callable[[Target, float], AbstractAsyncContextManager[object]]


@dataclass(frozen=True)
class LoadPlan:
    mode: Literal["closed", "open"]
    levels: list[float]  # concurrencies (closed loop) or request rates per second (open loop)
    num_requests: int | list[int] | None = None  # per target at each level (or one per level); or duration_s
    duration_s: float | None = None
    warmup: int = 0  # requests per target before measuring, not recorded
    rounds: int | None = None  # None: 1 for one target, several when comparing
    burstiness: float = 1.0  # open loop: 1 is Poisson; lower is burstier, higher is steadier
    max_concurrency: int | None = None  # open loop: cap on requests in flight
    timeout_s: float = 600.0
    seed: int = 0
    cancel_rate: float = 0.0  # share of measured requests whose client drops the connection mid-stream
    light: bool = False  # count output events without decoding each (client.light_events)
    processes: int = 1  # closed loop: load generator processes sharing each level's streams

    def __post_init__(self) -> None:
        if self.processes < 1:
            raise ValueError("processes must be at least 1")
        if self.processes > 1 and (self.mode != "closed" or self.cancel_rate > 0):
            raise ValueError("several load processes drive the closed loop only, without cancellations")

    def requests_at(self, level: float) -> int | None:
        """Requests per target at a level; None when the level runs for a duration."""
        if isinstance(self.num_requests, list):
            return self.num_requests[self.levels.index(level)]
        return self.num_requests

    def rounds_for(self, level: float, targets: int) -> int:
        if self.rounds is not None:
            return self.rounds
        if targets == 1:
            return 1
        requests = self.requests_at(level)
        if requests is None:
            return 4
        # Rounds of two full waves of requests where there are enough (so each reaches its steady
        # state), never under one wave, and at least two rounds so that every target goes first once.
        wave = int(level) if self.mode == "closed" else 1
        return max(1, min(8, requests // wave, max(2, requests // (2 * wave))))


@dataclass(frozen=True)
class Cancellation:
    """Which requests of one round the client drops mid-stream, and after how many output events.

    Each request's fate is drawn from its own generator, seeded by the run's seed, the round's key
    and the request's index: the same run cancels the same requests at the same points, every target
    of a comparison alike, however the requests interleave in time.
    """

    rate: float
    seed: int = 0
    key: str = ""  # the level and the round

    def after(self, index: int, max_events: int) -> int | None:
        """None to let request `index` finish; else drop it after that many output events, drawn
        uniformly from 0 (right after the response headers) to `max_events` - 1 (before its last)."""
        if self.rate <= 0:
            return None
        rng = random.Random(f"{self.seed}:cancel:{self.key}:{index}")
        if rng.random() >= self.rate:
            return None
        return rng.randrange(max(1, max_events))


@dataclass
class LevelResult:
    """Every request at one load level, and the wall time each target spent serving its rounds."""

    level: float
    rounds: int
    records: dict[str, list[RequestRecord]] = field(default_factory=dict)
    busy_s: dict[str, float] = field(default_factory=dict)


async def run_load(
    targets: list[Target],
    prompts: list[Prompt],
    sampling: Sampling,
    plan: LoadPlan,
    on_record: OnRecord | None = None,
    on_level: Callable[[float], None] | None = None,
    watch: Watch | None = None,
    after_level: Callable[[LevelResult], bool] | None = None,
    processes: LoadProcesses | None = None,
) -> list[LevelResult]:
    """Every level of the plan in turn. `watch(target, level)` wraps each stretch of load on one target
    (to observe the server meanwhile); `after_level` sees each level's result and returns False to stop
    before the next level (a sweep that found saturation). With `plan.processes` above 1 the streams
    run in that many processes (given as `processes`, or started here for the run)."""
    run_start = time.perf_counter()
    width = int(max(plan.levels)) if plan.mode == "closed" else (plan.max_concurrency or 1024)
    clients = {t.label: http_client(max(width, plan.warmup, 1), plan.timeout_s) for t in targets}
    own = processes is None and plan.processes > 1
    if own:
        processes = LoadProcesses(plan.processes, width, plan.timeout_s, plan.light)
    try:
        if plan.warmup:
            for target in targets:
                await asyncio.gather(
                    *(
                        send(clients[target.label], target, p, sampling, 0, run_start, light=plan.light)
                        for p in cycle(prompts, plan.warmup)
                    )
                )
        results = []
        for level in plan.levels:
            if on_level:
                on_level(level)
            result = await _run_level(
                targets, clients, prompts, sampling, plan, level, run_start, on_record, watch, processes
            )
            results.append(result)
            if after_level is not None and not after_level(result):
                break
        return results
    finally:
        for client in clients.values():
            await client.aclose()
        if own and processes is not None:
            processes.close()


async def _run_level(
    targets, clients, prompts, sampling, plan, level, run_start, on_record, watch, processes=None
) -> LevelResult:
    rounds = plan.rounds_for(level, len(targets))
    result = LevelResult(level, rounds, {t.label: [] for t in targets}, {t.label: 0.0 for t in targets})
    arrivals = arrival_times(plan, level) if plan.mode == "open" else None
    for r in range(rounds):
        work = _round_slice(plan, level, prompts, arrivals, r, rounds)
        order = targets[r % len(targets) :] + targets[: r % len(targets)]
        cancel = Cancellation(plan.cancel_rate, plan.seed, f"{level:g}:{r}") if plan.cancel_rate > 0 else None
        for target in order:
            async with watch(target, level) if watch else nullcontext():
                began = time.perf_counter()
                if processes is not None:
                    records = await processes.closed_loop(target, work, sampling, level, run_start, on_record)
                else:
                    records = await _drive(
                        clients[target.label], target, work, sampling, plan, level, run_start, on_record, cancel
                    )
                result.busy_s[target.label] += time.perf_counter() - began
            result.records[target.label].extend(records)
    return result


async def _drive(client, target, work, sampling, plan, level, run_start, on_record, cancel) -> list[RequestRecord]:
    """One target's share of one round."""
    if plan.mode == "closed":
        return await closed_loop(
            client,
            target,
            work.prompts,
            sampling,
            int(level),
            work.duration_s,
            run_start,
            on_record,
            cancel,
            plan.light,
        )
    return await open_loop(
        client,
        target,
        work.prompts,
        work.arrivals or [],
        sampling,
        level,
        plan.max_concurrency,
        run_start,
        on_record,
        cancel,
        plan.light,
    )


@dataclass
class _Slice:
    prompts: list[Prompt]
    arrivals: list[float] | None = None
    duration_s: float | None = None


def _round_slice(
    plan: LoadPlan, level: float, prompts: list[Prompt], arrivals: list[float] | None, r: int, rounds: int
) -> _Slice:
    """Round r's share of the level: a slice of requests (and their arrival times), or of the duration."""
    if arrivals is not None:
        lo, hi = len(arrivals) * r // rounds, len(arrivals) * (r + 1) // rounds
        base = arrivals[lo] if lo < len(arrivals) else 0.0
        return _Slice(cycle(prompts, hi - lo, lo), [a - base for a in arrivals[lo:hi]])
    if (requests := plan.requests_at(level)) is not None:
        lo, hi = requests * r // rounds, requests * (r + 1) // rounds
        return _Slice(cycle(prompts, hi - lo, lo))
    assert plan.duration_s is not None, "a level runs for a number of requests or for a duration"
    return _Slice(prompts, duration_s=plan.duration_s / rounds)


def arrival_times(plan: LoadPlan, rate: float) -> list[float]:
    """Request send times for one open-loop level: gamma-distributed gaps with mean 1/rate.

    Shape `burstiness` 1 gives Poisson arrivals; an infinite rate sends everything at once.
    Seeded by the level, so every target and every rerun gets the same schedule.
    """
    rng = random.Random(f"{plan.seed}:{rate}")
    requests = plan.requests_at(rate)
    count = requests if requests is not None else math.inf
    times: list[float] = []
    now = 0.0
    while len(times) < count:
        if plan.duration_s is not None and now > plan.duration_s:
            break
        times.append(now)
        if not math.isinf(rate):
            now += rng.gammavariate(plan.burstiness, 1.0 / (rate * plan.burstiness))
        elif requests is None:
            raise ValueError("an infinite rate needs --num-requests")
    return times


async def closed_loop(
    client: httpx.AsyncClient,
    target: Target,
    prompts: list[Prompt],
    sampling: Sampling,
    concurrency: int,
    duration_s: float | None,
    run_start: float,
    on_record: OnRecord | None,
    cancel: Cancellation | None = None,
    light: bool = False,
) -> list[RequestRecord]:
    """`concurrency` workers, each sending its next request as soon as its last one finished.
    Stops after every prompt was sent once, or (given a duration) when the time is up.
    A cancelled request frees its worker at once, as a user who leaves sends the next question."""
    records: list[RequestRecord] = []
    deadline = time.perf_counter() + duration_s if duration_s is not None else None
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while True:
            if deadline is None and next_index >= len(prompts):
                return
            if deadline is not None and time.perf_counter() >= deadline:
                return
            index = next_index
            prompt = prompts[index % len(prompts)]
            next_index += 1
            cancel_after = cancel.after(index, prompt.max_tokens) if cancel else None
            record = await send(client, target, prompt, sampling, concurrency, run_start, cancel_after, light)
            records.append(record)
            if on_record:
                on_record(record)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return records


async def open_loop(
    client: httpx.AsyncClient,
    target: Target,
    prompts: list[Prompt],
    arrivals: list[float],
    sampling: Sampling,
    rate: float,
    max_concurrency: int | None,
    run_start: float,
    on_record: OnRecord | None,
    cancel: Cancellation | None = None,
    light: bool = False,
) -> list[RequestRecord]:
    """Send each prompt at its arrival time whether or not earlier requests have finished."""
    cap = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    began = time.perf_counter()

    async def one(index: int, prompt: Prompt, at: float) -> RequestRecord:
        await asyncio.sleep(max(0.0, at - (time.perf_counter() - began)))
        cancel_after = cancel.after(index, prompt.max_tokens) if cancel else None
        if cap is None:
            record = await send(client, target, prompt, sampling, rate, run_start, cancel_after, light)
        else:
            async with cap:
                record = await send(client, target, prompt, sampling, rate, run_start, cancel_after, light)
        if on_record:
            on_record(record)
        return record

    sends = (one(i, p, at) for i, (p, at) in enumerate(zip(prompts, arrivals, strict=True)))
    return list(await asyncio.gather(*sends))


class LoadProcesses:
    """Load generator processes of their own, for more streams than one process's event loop can
    drive without becoming the limit. Each keeps its connections from slice to slice; a closed-loop
    slice is split among them by streams and prompts, and its records come back to this process.
    perf_counter is the system's monotonic clock, so their times share the run's start."""

    def __init__(self, count: int, width: int, timeout_s: float, light: bool = False):
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # no copy of this process's event loop or threads
        self.pipes = []
        self.workers = []
        for _ in range(count):
            ours, theirs = context.Pipe()
            worker = context.Process(target=_load_process, args=(theirs, width, timeout_s, light), daemon=True)
            worker.start()
            self.pipes.append(ours)
            self.workers.append(worker)

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers if w.pid is not None]

    async def closed_loop(
        self, target: Target, work: _Slice, sampling: Sampling, level: float, run_start: float, on_record
    ) -> list[RequestRecord]:
        jobs = split_streams(int(level), work.prompts, len(self.workers), work.duration_s is not None)
        busy = []
        for pipe, (streams, prompts) in zip(self.pipes, jobs, strict=False):
            pipe.send((target, prompts, sampling, streams, work.duration_s, run_start))
            busy.append(pipe)
        records = [r for part in await asyncio.gather(*(asyncio.to_thread(p.recv) for p in busy)) for r in part]
        for record in records:
            record.level = level
            if on_record:
                on_record(record)
        return records

    def close(self) -> None:
        for pipe in self.pipes:
            pipe.send(None)
        for worker in self.workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()


def split_streams(streams: int, prompts: list[Prompt], count: int, whole: bool) -> list[tuple[int, list[Prompt]]]:
    """Streams and prompts for each of `count` processes: streams as even as they go, and prompts in
    proportion (`whole`: every process cycles through all of them, as for a duration)."""
    shares = [streams // count + (1 if i < streams % count else 0) for i in range(count)]
    jobs, done = [], 0
    for share in filter(None, shares):
        lo, hi = len(prompts) * done // streams, len(prompts) * (done + share) // streams
        jobs.append((share, prompts if whole else prompts[lo:hi]))
        done += share
    return jobs


def _load_process(pipe, width: int, timeout_s: float, light: bool) -> None:
    asyncio.run(_serve_slices(pipe, width, timeout_s, light))


async def _serve_slices(pipe, width: int, timeout_s: float, light: bool) -> None:
    clients: dict[str, httpx.AsyncClient] = {}
    try:
        while (job := await asyncio.to_thread(pipe.recv)) is not None:
            target, prompts, sampling, streams, duration_s, run_start = job
            if target.label not in clients:
                clients[target.label] = http_client(width, timeout_s)
            client = clients[target.label]
            pipe.send(
                await closed_loop(client, target, prompts, sampling, streams, duration_s, run_start, None, None, light)
            )
    finally:
        for client in clients.values():
            await client.aclose()
