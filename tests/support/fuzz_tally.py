"""Counts of the fuzz cases sent, by operation and status, for the run's summary (`make fuzz`)."""

from __future__ import annotations

import json
import threading
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any


class Tally:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.cases: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.failed_tests: list[str] = []
        self.passed_tests = 0
        self.failed_cases: list[str] = []  # "suite: operation: what failed", for the schemathesis runs

    def case(self, suite: str, operation: str, status: int) -> None:
        with self._lock:
            self.cases[f"{suite}: {operation}"][str(status)] += 1

    def case_failed(self, suite: str, operation: str, what: str) -> None:
        with self._lock:
            self.failed_cases.append(f"{suite}: {operation}: {what}")

    @property
    def total(self) -> int:
        return sum(sum(statuses.values()) for statuses in self.cases.values())

    def summary(self) -> dict[str, Any]:
        return {
            "cases": self.total,
            "tests_passed": self.passed_tests,
            "tests_failed": len(self.failed_tests),
            "failed": self.failed_tests,
            "failed_cases": self.failed_cases,
            "by_operation": {name: dict(sorted(statuses.items())) for name, statuses in sorted(self.cases.items())},
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.summary(), indent=2) + "\n")


TALLY = Tally()
