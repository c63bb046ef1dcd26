"""The GPU check's record: each step's verdict and reason, and the report they make.

The report is gpu-check.json and its Markdown, gpu-check.md. Standard library only, like the preflight.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

PASS, FAIL, SKIPPED = "pass", "fail", "skipped"


@dataclass
class Step:
    name: str
    title: str
    verdict: str = SKIPPED
    reason: str = ""
    command: str | None = None
    seconds: float | None = None
    budget_s: float | None = None  # its share of the check's time on one H100
    figures: dict[str, Any] = field(default_factory=dict)

    def passed(self, reason: str = "", **figures: Any) -> Step:
        self.verdict, self.reason = PASS, reason
        self.figures.update(figures)
        return self

    def failed(self, reason: str, **figures: Any) -> Step:
        self.verdict, self.reason = FAIL, reason
        self.figures.update(figures)
        return self

    def skipped(self, reason: str, **figures: Any) -> Step:
        self.verdict, self.reason = SKIPPED, reason
        self.figures.update(figures)
        return self


def build_report(
    steps: list[Step], dry_run: bool, config_shown: str, model: str | None, gpus: list[dict[str, Any]]
) -> dict[str, Any]:
    """The verdict is pass only when every step passed, fail when any failed, else incomplete."""
    verdicts = [s.verdict for s in steps]
    if FAIL in verdicts:
        verdict = FAIL
    elif all(v == PASS for v in verdicts):
        verdict = PASS
    else:
        verdict = "incomplete"
    failed = [f"{s.name}: {s.reason}" for s in steps if s.verdict == FAIL]
    return {
        "verdict": verdict,
        "summary": "; ".join(failed) if failed else ("every step passed" if verdict == PASS else "not every step ran"),
        "dry_run": dry_run,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config_shown,
        "model": model,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "gpus": gpus,
        },
        "steps": [asdict(s) for s in steps],
    }


def markdown(report: dict[str, Any]) -> str:
    mode = (
        " (dry run)"
        if report["dry_run"]
        else " (rehearsal on a CPU: never a GPU verdict)"
        if report.get("rehearsal")
        else ""
    )
    lines = [
        "# GPU check",
        "",
        f"**Verdict: {report['verdict']}**{mode}: {report['summary']}",
        "",
        f"Config `{report['config']}` ({report['model']}); {report['created']}; "
        f"{report['machine']['platform']}, Python {report['machine']['python']}, {report['machine']['cpus']} CPUs.",
    ]
    budget = report.get("budget")
    if budget:
        lines += ["", f"Time: {budget['spent_s']} s of the {budget['total_s']} s budget for {budget['applies']}."]
    lines += ["", "| step | verdict | reason | seconds | budget (s) |", "| --- | --- | --- | --- | --- |"]
    for s in report["steps"]:
        reason = s["reason"].replace("|", "\\|").replace("\n", " ")
        seconds = s["seconds"] if s["seconds"] is not None else ""
        lines.append(f"| {s['name']} | {s['verdict']} | {reason} | {seconds} | {s.get('budget_s') or ''} |")
    for s in report["steps"]:
        lines += ["", f"## {s['name']}: {s['title']}", "", f"{s['verdict']}: {s['reason']}"]
        if s["command"]:
            lines += ["", "```", s["command"], "```"]
        figures = dict(s["figures"])
        if "levels" in figures:
            lines += ["", *load_table(figures.pop("levels"))]
        if figures:
            lines += ["", "```json", json.dumps(figures, indent=1), "```"]
    return "\n".join(lines) + "\n"


def load_table(levels: list[dict[str, Any]]) -> list[str]:
    """A load series: one row per level and server."""

    def number(value: Any, digits: int = 1) -> str:
        return "n/a" if value is None else f"{value:,.{digits}f}"

    lines = [
        "| streams | server | requests (failed) | tokens/request | output tok/s | TTFT p50 / p99 (ms) "
        "| ITL p50 / p99 (ms) | front-end CPU µs/token | wai / vLLM tok/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for level in levels:
        for label, row in level["series"].items():
            ratio = level.get("wai_over_vllm") if label.startswith("wai") else None
            lines.append(
                f"| {level['streams']} | {label} | {row['requests']} ({row['failed']}) "
                f"| {number(row['mean_output_tokens'])} | {number(row['output_tokens_per_s'])} "
                f"| {number(row['ttft_ms']['p50'])} / {number(row['ttft_ms']['p99'])} "
                f"| {number(row['itl_ms']['p50'], 2)} / {number(row['itl_ms']['p99'], 2)} "
                f"| {number(row['front_end_cpu_us_per_token'], 0)} | {number(ratio, 3) if ratio else ''} |"
            )
    return lines
