"""A pytest plugin for `make fuzz` (`-p tests.fuzz.report`): counts the cases the fuzz tests sent, by
operation and status (tests/support/fuzz_tally.py), and the tests that failed; prints the totals and writes
them as JSON to $WAI_FUZZ_SUMMARY."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.fuzz_tally import TALLY


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed:
        TALLY.failed_tests.append(report.nodeid)
    elif report.when == "call" and report.passed:
        TALLY.passed_tests += 1


def pytest_sessionfinish(session: pytest.Session) -> None:
    summary = os.environ.get("WAI_FUZZ_SUMMARY")
    if summary:
        TALLY.write(Path(summary))


def pytest_terminal_summary(terminalreporter) -> None:
    by_suite: dict[str, int] = {}
    for name, statuses in TALLY.cases.items():
        suite = name.split(":", 1)[0]
        by_suite[suite] = by_suite.get(suite, 0) + sum(statuses.values())
    parts = ", ".join(f"{suite} {count}" for suite, count in sorted(by_suite.items()))
    terminalreporter.write_line(
        f"fuzz: {TALLY.total} cases ({parts}); {TALLY.passed_tests} tests passed, {len(TALLY.failed_tests)} failed"
    )
