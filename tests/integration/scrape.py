"""Read a server's /metrics with prometheus_client's own parser, and its JSON request log."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.server import RunningServer


@dataclass
class Scrape:
    samples: list[tuple[str, dict[str, str], float]]

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples named `name` whose labels include `labels`."""
        return sum(
            value
            for sample, sample_labels, value in self.samples
            if sample == name and labels.items() <= sample_labels.items()
        )

    def names(self) -> set[str]:
        return {sample for sample, _, _ in self.samples}

    def __sub__(self, before: Scrape) -> Delta:
        return Delta(self, before)


@dataclass
class Delta:
    after: Scrape
    before: Scrape

    def value(self, name: str, **labels: str) -> float:
        return self.after.value(name, **labels) - self.before.value(name, **labels)


def scrape(server: RunningServer, **headers: str) -> Scrape:
    response = httpx.get(f"{server.base_url}/metrics", headers=headers, timeout=30)
    response.raise_for_status()
    samples = [
        (s.name, s.labels, s.value) for family in text_string_to_metric_families(response.text) for s in family.samples
    ]
    return Scrape(samples)


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 120) -> Any:
    """Poll until `condition()` is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def request_log(server: RunningServer) -> list[dict[str, Any]]:
    """The server's per-request JSON log lines, in order."""
    lines = []
    for line in server.log().splitlines():
        if line.startswith("{") and '"request_id"' in line:
            lines.append(json.loads(line))
    return lines
