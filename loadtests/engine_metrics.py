"""The engine's state while a level runs, read from the target's Prometheus `/metrics`.

vLLM's series (which wai serves on its own `/metrics`): requests running in the batch and waiting
for it, the share of the KV cache in use, and preemptions (requests evicted from the cache under
memory pressure, to be recomputed). Each is summed over its labels (models, engines).

While a target is driven at a level, `/metrics` is read as the load starts (the preemption count's
baseline), every `interval_s` seconds during it (running, waiting, KV cache) and as it ends.
A target without these series, or whose `/metrics` cannot be read, is reported as such; the load
goes on.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_CACHE = "vllm:kv_cache_usage_perc"  # a fraction: 1 is the whole cache, despite the name
PREEMPTIONS = "vllm:num_preemptions_total"
SERIES = (RUNNING, WAITING, KV_CACHE, PREEMPTIONS)


def metrics_url(url: str) -> str:
    """/metrics at the root of a target's URL, whatever API base the target was given as."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/metrics"


def engine_values(text: str) -> dict[str, float | None]:
    """Each engine series summed over its labels; None for one that is absent.

    Raises ValueError on text that is not the Prometheus text format."""
    totals: dict[str, float | None] = dict.fromkeys(SERIES)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in totals:
                totals[sample.name] = (totals[sample.name] or 0.0) + sample.value
    return totals


@dataclass
class EngineLevel:
    """What was read from one target's `/metrics` at one level, over all its rounds."""

    url: str
    samples: list[dict[str, float | None]] = field(default_factory=list)  # read while the load ran
    preemptions: float | None = None  # added up over the rounds: count at the end - at the start
    reads: int = 0
    problem: str | None = None  # the last reason a read failed, if one did

    def as_json(self) -> dict[str, Any]:
        def spread(name: str, scale: float = 1.0) -> dict[str, float | None]:
            values = [value * scale for s in self.samples if (value := s[name]) is not None]
            if not values:
                return {"mean": None, "max": None}
            return {"mean": statistics.fmean(values), "max": max(values)}

        return {
            "url": self.url,
            "samples": len(self.samples),
            "reads": self.reads,
            "running": spread(RUNNING),
            "waiting": spread(WAITING),
            "kv_cache_usage_pct": spread(KV_CACHE, 100.0),
            "preemptions": self.preemptions,
            "problem": self.problem,
        }


class EngineWatch:
    """Reads one target's `/metrics` while it is under load (see the module's docstring)."""

    def __init__(self, url: str, headers: dict[str, str], interval_s: float = 1.0):
        self.url = url
        self.headers = headers
        self.interval_s = interval_s
        self.client = httpx.AsyncClient(timeout=10)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def read(self, level: EngineLevel) -> dict[str, float | None] | None:
        level.reads += 1
        try:
            response = await self.client.get(self.url, headers=self.headers)
            if response.status_code != 200:
                level.problem = f"GET {self.url} answered {response.status_code}"
                return None
            return engine_values(response.text)
        except httpx.HTTPError as exc:
            level.problem = f"GET {self.url} failed: {exc!r}"
        except ValueError as exc:
            level.problem = f"GET {self.url}: not the Prometheus text format ({exc})"
        return None

    @asynccontextmanager
    async def during(self, level: EngineLevel) -> AsyncIterator[None]:
        """Reads /metrics while the body of the `async with` drives the load."""
        first = await self.read(level)

        async def poll() -> None:
            await asyncio.sleep(min(0.25, self.interval_s))  # let the first requests reach the engine
            while True:
                began = time.perf_counter()
                if (values := await self.read(level)) is not None:
                    level.samples.append(values)
                await asyncio.sleep(max(0.0, self.interval_s - (time.perf_counter() - began)))

        poller = asyncio.create_task(poll())
        try:
            yield
        finally:
            poller.cancel()
            try:
                await poller
            except asyncio.CancelledError:
                pass
        last = await self.read(level)
        before = first[PREEMPTIONS] if first else None
        after = last[PREEMPTIONS] if last else None
        if before is not None and after is not None:
            level.preemptions = (level.preemptions or 0.0) + after - before
