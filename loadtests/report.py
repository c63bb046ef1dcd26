"""Reports of a run: report.json, report.md, PNG plots, and report.html.

report.json (summaries and every request) is built here; beside it go report.md (tables,
loadtests/markdown_report.py), PNG plots (loadtests/plots.py) and report.html (tables and SVG plots
in one file, loadtests/html_report.py).
"""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtests import html_report
from loadtests.compare import ratios
from loadtests.display import level_label, number
from loadtests.markdown_report import markdown
from loadtests.plots import plots
from loadtests.protocols import Target
from loadtests.runner import LevelResult, LoadPlan
from loadtests.stats import SLO, summarize
from loadtests.sweep import SweepResult, SweepSettings


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or ""
    memory_gib = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "memory_gib": memory_gib,
        "cpu": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def build(
    targets: list[Target],
    plan: LoadPlan,
    results: list[LevelResult],
    slo: SLO | None,
    options: dict[str, Any],
) -> dict[str, Any]:
    """The whole report as one JSON-ready dict. Ratios are each target over the first one."""
    levels = []
    for result in results:
        summaries = {t.label: summarize(result.records[t.label], result.busy_s[t.label], slo) for t in targets}
        base = summaries[targets[0].label]
        levels.append(
            {
                "level": result.level,
                "rounds": result.rounds,
                "summaries": summaries,
                "ratios": {t.label: ratios(base, summaries[t.label]) for t in targets[1:]},
            }
        )
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "options": options,
        "mode": plan.mode,
        "level_name": level_name(plan),
        "slo": slo.as_json() if slo else None,
        "targets": [{"label": t.label, "url": t.url, "protocol": t.protocol, "model": t.model} for t in targets],
        "levels": levels,
        "requests": [r.as_json() for result in results for t in targets for r in result.records[t.label]],
    }


def add_sweep(report: dict[str, Any], plan: LoadPlan, result: SweepResult, settings: SweepSettings) -> None:
    """Each level's engine metrics, and each target's knee, into a built report."""
    for level in report["levels"]:
        readings = result.engine.get(level["level"], {})
        level["engine"] = {label: r.as_json() for label, r in readings.items()}
    knees = {}
    for target in report["targets"]:
        label = target["label"]
        knee = result.knees.get(label)
        by_level = [(lv["level"], lv["summaries"][label]) for lv in report["levels"]]
        peak_level, peak = max(by_level, key=lambda item: item[1]["output_throughput"])
        entry: dict[str, Any] = {
            "found": knee is not None and knee.index is not None,
            "saturated": bool(knee and knee.saturated),
            "reason": knee.reason if knee else "no level measured",
            "peak": {"concurrency": peak_level, "output_throughput": peak["output_throughput"]},
        }
        if knee is not None and knee.index is not None:
            level, summary = by_level[knee.index]
            entry.update(_knee_figures(level, summary))
        knees[label] = entry
    report["sweep"] = {
        "max_concurrency": max(plan.levels),
        "levels_planned": plan.levels,
        "knee_gain": settings.min_gain,
        "past_knee": settings.past_knee,
        "scrape_interval_s": settings.scrape_interval_s,
        "metrics_urls": {label: url for label, (url, _) in settings.metrics.items()},
        "stopped": result.stopped,
        "knees": knees,
    }


def _knee_figures(level: float, summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "concurrency": level,
        "output_throughput": summary["output_throughput"],
        "request_throughput": summary["request_throughput"],
        "ttft_ms": {p: summary["ttft_ms"][p] for p in ("p50", "p99")},
        "itl_ms": {p: summary["itl_ms"][p] for p in ("p50", "p99")},
    }


def knee_lines(report: dict[str, Any]) -> list[str]:
    """One line per target: its knee, or why there is none."""
    lines = []
    for label, knee in report["sweep"]["knees"].items():
        if knee["found"]:
            ttft, itl = knee["ttft_ms"], knee["itl_ms"]
            lines.append(
                f"knee {label}: concurrency {level_label(knee['concurrency'])}, "
                f"{knee['output_throughput']:,.1f} output tokens/s, {knee['request_throughput']:,.2f} requests/s, "
                f"TTFT p50 {number(ttft['p50'])} ms p99 {number(ttft['p99'])} ms, "
                f"ITL p50 {number(itl['p50'])} ms p99 {number(itl['p99'])} ms ({knee['reason']})"
            )
        else:
            lines.append(f"knee {label}: none found ({knee['reason']})")
    return lines


def level_name(plan: LoadPlan) -> str:
    return "concurrency" if plan.mode == "closed" else "rate (req/s)"


def write(report: dict[str, Any], out: Path) -> list[Path]:
    """Write report.json, report.md and the plots into `out`; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "report.json", out / "report.md"]
    files[0].write_text(json.dumps(report, indent=1) + "\n")
    files[1].write_text(markdown(report))
    return [*files, html_report.write(report, out), *plots(report, out)]
