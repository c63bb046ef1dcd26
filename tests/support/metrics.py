"""A server's /metrics, read with prometheus_client's own parser."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import httpx
from prometheus_client.parser import text_string_to_metric_families


class Addressed(Protocol):
    base_url: str


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


def parse(text: str) -> Scrape:
    """Every sample in a Prometheus text exposition."""
    return Scrape(
        [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples]
    )


def scrape(source: httpx.Client | Addressed, **headers: str) -> Scrape:
    """Every sample on /metrics, read through `source`: a client with a base URL, or a server."""
    if isinstance(source, httpx.Client):
        response = source.get("/metrics", headers=headers)
    else:
        response = httpx.get(f"{source.base_url}/metrics", headers=headers, timeout=30)
    response.raise_for_status()
    return parse(response.text)
