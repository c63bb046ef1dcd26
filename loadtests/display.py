"""How the reports show a figure and a load level, and lay out a plot's level axis.

One look for report.md (loadtests/markdown_report.py), the PNG plots (loadtests/plots.py),
report.html (loadtests/html_report.py) and the console's knee lines.
"""

from __future__ import annotations

from typing import Any


def number(value: Any, digits: int = 1) -> str:
    """A figure as a table shows it: thousands separated, `digits` decimals, "-" when not measured."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def level_label(value: float) -> str:
    """A load level without a needless ".0": concurrency 8, rate 0.5."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def level_axis(ax, levels: list[float], name: str) -> None:
    """A matplotlib axis of load levels: a tick at each level, doubling steps on a log scale."""
    if len(levels) > 1 and min(levels) > 0 and max(levels) / min(levels) >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xticks(levels, [level_label(v) for v in levels])
    ax.set_xlabel(name)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
