"""server/metrics.py is the one source of wai's series; the README's table must list each of them."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import Counter
from prometheus_client.metrics import MetricWrapperBase

from server import metrics

README = Path(__file__).resolve().parents[2] / "README.md"


def exported_names() -> dict[str, tuple[str, ...]]:
    names = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            name = value._name + ("_total" if isinstance(value, Counter) else "")
            names[name] = tuple(value._labelnames)
    return names


def test_every_series_is_in_the_readme_table_with_its_labels():
    rows = dict(re.findall(r"^\| `(wai_\w+)` \| ([\w, ]*) \|", README.read_text(), flags=re.MULTILINE))
    exported = exported_names()
    assert set(rows) == set(exported)
    for name, labels in exported.items():
        assert tuple(label.strip() for label in rows[name].split(",") if label.strip()) == labels, name


def test_names_are_wai_names_without_colons():
    # Colons are for the engine's own recording-rule style names (vllm:*), never ours.
    assert all(re.fullmatch(r"wai_[a-z_]+", name) for name in exported_names())


def test_buckets_resolve_milliseconds_and_minutes():
    for buckets in (metrics.LATENCY_BUCKETS, metrics.INTER_TOKEN_BUCKETS, metrics.DURATION_BUCKETS):
        assert buckets[0] <= 0.001 and list(buckets) == sorted(buckets)
    assert metrics.LATENCY_BUCKETS[-1] >= 60 and metrics.DURATION_BUCKETS[-1] >= 600
