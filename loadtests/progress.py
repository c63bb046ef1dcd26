"""What the operator sees while a load test runs, and the summary printed at its end."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress
from rich.table import Table

from loadtests.client import RequestRecord
from loadtests.protocols import Target
from loadtests.runner import LoadPlan


class Progress:
    """A bar per load level: requests done over all targets, and how many failed."""

    def __init__(self, targets: list[Target], plan: LoadPlan, enabled: bool = True):
        self.targets = targets
        self.plan = plan
        self.name = "concurrency" if plan.mode == "closed" else "rate"
        self.bar = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("failed {task.fields[failed]}"),
            TimeElapsedColumn(),
            disable=not enabled,
            transient=False,
        )
        self.task: TaskID | None = None

    def __enter__(self) -> Progress:
        self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.stop()

    def level(self, level: float) -> None:
        requests = self.plan.requests_at(level)
        total = requests * len(self.targets) if requests else None
        self.task = self.bar.add_task(f"{self.name} {level:g}", total=total, failed=0)

    def record(self, record: RequestRecord) -> None:
        if self.task is None:
            return
        failed = self.bar.tasks[-1].fields["failed"] + (0 if record.ok or record.cancelled else 1)
        self.bar.update(self.task, advance=1, failed=failed)

    @staticmethod
    def print_summary(report: dict[str, Any]) -> None:
        table = Table(title="wai loadtest (latencies in ms)")
        for column in (
            report["level_name"],
            "target",
            "ok",
            "cancelled",
            "failed",
            "out tok/s",
            "req/s",
            "TTFT p50",
            "TTFT p99",
            "TPOT p50",
            "E2E p50",
            "out tok/s ratio",
            "TTFT p50 ratio",
        ):
            table.add_column(column, justify="right")
        for level in report["levels"]:
            for label, s in level["summaries"].items():
                r = level["ratios"].get(label)
                table.add_row(
                    f"{level['level']:g}",
                    label,
                    str(s["completed"]),
                    str(s["cancelled"]),
                    str(s["failed"]),
                    _f(s["output_throughput"]),
                    _f(s["request_throughput"], 2),
                    _f(s["ttft_ms"]["p50"]),
                    _f(s["ttft_ms"]["p99"]),
                    _f(s["tpot_ms"]["p50"]),
                    _f(s["e2e_ms"]["p50"]),
                    _f(r and r["output_throughput"], 3),
                    _f(r and r["ttft_ms"]["p50"], 3),
                )
        console = Console()
        if not console.is_terminal:  # a log file: do not squeeze the table into 80 columns
            console = Console(width=160)
        console.print(table)
        for level in report["levels"]:
            for label, s in level["summaries"].items():
                if s["errors"]:
                    console.print(f"{report['level_name']} {level['level']:g} {label}: errors {s['errors']}")


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"
