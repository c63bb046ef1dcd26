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
    lines = [
        "# GPU check",
        "",
        f"**Verdict: {report['verdict']}**{' (dry run)' if report['dry_run'] else ''}: {report['summary']}",
        "",
        f"Config `{report['config']}` ({report['model']}); {report['created']}; "
        f"{report['machine']['platform']}, Python {report['machine']['python']}, {report['machine']['cpus']} CPUs.",
        "",
        "| step | verdict | reason | seconds |",
        "| --- | --- | --- | --- |",
    ]
    for s in report["steps"]:
        reason = s["reason"].replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| {s['name']} | {s['verdict']} | {reason} | {s['seconds'] if s['seconds'] is not None else ''} |"
        )
    for s in report["steps"]:
        lines += ["", f"## {s['name']}: {s['title']}", "", f"{s['verdict']}: {s['reason']}"]
        if s["command"]:
            lines += ["", "```", s["command"], "```"]
        if s["figures"]:
            lines += ["", "```json", json.dumps(s["figures"], indent=1), "```"]
    return "\n".join(lines) + "\n"
