"""report's PNG plots: latency CDFs, and throughput and time to first token against the load level."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loadtests.display import level_axis, level_label
from loadtests.stats import LATENCIES, LATENCY_NAMES


def plots(report: dict[str, Any], out: Path) -> list[Path]:
    """Latency CDFs (one figure per metric, a panel per level, a line per target) and throughput and
    time to first token against the load level, every target on the same axes."""
    import matplotlib

    matplotlib.use("Agg")
    return [
        *(cdf_plot(report, metric, out) for metric in LATENCIES),
        throughput_plot(report, out),
        ttft_plot(report, out),
    ]


def by_level(report: dict[str, Any], label: str, pick) -> list[Any]:
    """One figure of a target's summary at each level; None (no sample) plots as a gap."""
    return [pick(lv["summaries"][label]) for lv in report["levels"]]


def cdf_plot(report: dict[str, Any], metric: str, out: Path) -> Path:
    import matplotlib.pyplot as plt
    import numpy as np

    levels = [lv["level"] for lv in report["levels"]]
    fig, axes = plt.subplots(1, len(levels), figsize=(4 * len(levels), 3.4), squeeze=False, sharey=True)
    for ax, level in zip(axes[0], levels, strict=True):
        for label in (t["label"] for t in report["targets"]):
            values = _values(report["requests"], label, level, metric)
            if values:
                xs = np.sort(values)
                ax.plot(xs, np.arange(1, len(xs) + 1) / len(xs), label=label)
        ax.set_title(f"{report['level_name']} {level_label(level)}")
        ax.set_xlabel(f"{LATENCY_NAMES[metric]} (ms)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("fraction of requests" if metric != "itl" else "fraction of tokens")
    if axes[0][0].get_legend_handles_labels()[0]:  # no line when no request completed
        axes[0][0].legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, out / f"cdf_{metric}.png")


def throughput_plot(report: dict[str, Any], out: Path) -> Path:
    import matplotlib.pyplot as plt

    levels = [lv["level"] for lv in report["levels"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for label in (t["label"] for t in report["targets"]):
        left.plot(levels, by_level(report, label, lambda s: s["output_throughput"]), marker="o", label=label)
        right.plot(levels, by_level(report, label, lambda s: s["request_throughput"]), marker="o", label=label)
    left.set_ylabel("output tokens / s")
    right.set_ylabel("requests / s")
    for ax in (left, right):
        level_axis(ax, levels, report["level_name"])
    left.legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, out / "throughput.png")


def ttft_plot(report: dict[str, Any], out: Path) -> Path:
    import matplotlib.pyplot as plt

    levels = [lv["level"] for lv in report["levels"]]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for i, label in enumerate(t["label"] for t in report["targets"]):
        color = f"C{i}"
        p50 = by_level(report, label, lambda s: s["ttft_ms"]["p50"])
        p99 = by_level(report, label, lambda s: s["ttft_ms"]["p99"])
        ax.plot(levels, p50, marker="o", color=color, label=f"{label} p50")
        ax.plot(levels, p99, marker="x", linestyle="--", color=color, label=f"{label} p99")
    ax.set_ylabel("time to first token (ms)")
    level_axis(ax, levels, report["level_name"])
    ax.legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, out / "ttft.png")


def _values(requests: list[dict[str, Any]], label: str, level: float, metric: str) -> list[float]:
    values: list[float] = []
    for r in requests:
        if r["ok"] and r["target"] == label and r["level"] == level:
            if metric == "itl":
                values.extend(v * 1000 for v in r["itl"])
            elif r[metric] is not None:
                values.append(r[metric] * 1000)
    return values


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
