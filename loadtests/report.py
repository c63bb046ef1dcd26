"""Reports of a run: report.json, report.md, PNG plots, and report.html.

report.json holds the summaries and every request, report.md the tables, report.html the tables and SVG
plots in one file (loadtests/html_report.py)."""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtests.compare import ratios
from loadtests.protocols import Target
from loadtests.runner import LevelResult, LoadPlan
from loadtests.stats import LATENCIES, LATENCY_NAMES, PERCENTILES, SLO, summarize
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
            lines.append(
                f"knee {label}: concurrency {_level(knee['concurrency'])}, {knee['output_throughput']:,.1f} output "
                f"tokens/s, {knee['request_throughput']:,.2f} requests/s, TTFT p50 {_fmt(knee['ttft_ms']['p50'])} ms "
                f"p99 {_fmt(knee['ttft_ms']['p99'])} ms, ITL p50 {_fmt(knee['itl_ms']['p50'])} ms "
                f"p99 {_fmt(knee['itl_ms']['p99'])} ms ({knee['reason']})"
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
    from loadtests import html_report

    return [*files, html_report.write(report, out), *plots(report, out)]


# ---------------------------------------------------------------- Markdown


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _level(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]


def markdown(report: dict[str, Any]) -> str:
    name = report["level_name"]
    m = report["machine"]
    lines = [
        "# Load test report",
        "",
        f"{report['created']}, {report['mode']} loop, on {m['cpus']} CPUs ({m['cpu']}), {m['memory_gib']} GiB.",
        "",
        "Targets:",
        "",
        *(f"- **{t['label']}**: {t['protocol']} at {t['url']}, model `{t['model']}`" for t in report["targets"]),
        "",
    ]
    if report.get("soak"):
        lines += _soak(report["soak"])
    if report.get("sweep"):
        lines += _sweep(report["sweep"])
    if report["slo"]:
        lines += [f"Goodput SLO (ms): {report['slo']}", ""]
    header = [
        name,
        "target",
        "ok",
        "failed",
        "cancelled",
        "req/s",
        "out tok/s",
        "goodput",
        "mean out tok",
        "TTFT p50",
        "TTFT p99",
        "TPOT p50",
        "TPOT p99",
        "ITL p50",
        "ITL p99",
        "E2E p50",
        "E2E p99",
    ]
    rows = []
    for level in report["levels"]:
        for label, s in level["summaries"].items():
            rows.append(
                [
                    _level(level["level"]),
                    label,
                    str(s["completed"]),
                    str(s["failed"]),
                    str(s.get("cancelled", 0)),
                    _fmt(s["request_throughput"], 2),
                    _fmt(s["output_throughput"]),
                    _fmt(s.get("goodput"), 2),
                    _fmt(s["mean_output_tokens"]),
                    *(_fmt(s[f"{m}_ms"][p]) for m in ("ttft", "tpot", "itl", "e2e") for p in ("p50", "p99")),
                ]
            )
    lines += ["## Summary (latencies in ms)", "", *_table(header, rows)]

    if any(level["ratios"] for level in report["levels"]):
        base = report["targets"][0]["label"]
        header = [
            name,
            "target",
            "out tok/s",
            "req/s",
            "mean out tok",
            "TTFT p50",
            "TTFT p90",
            "TTFT p99",
            "TPOT p50",
            "TPOT p99",
            "ITL p50",
            "E2E p50",
            "E2E p99",
        ]
        rows = []
        for level in report["levels"]:
            for label, r in level["ratios"].items():
                rows.append(
                    [
                        _level(level["level"]),
                        label,
                        _fmt(r["output_throughput"], 3),
                        _fmt(r["request_throughput"], 3),
                        _fmt(r["mean_output_tokens"], 3),
                        _fmt(r["ttft_ms"]["p50"], 3),
                        _fmt(r["ttft_ms"]["p90"], 3),
                        _fmt(r["ttft_ms"]["p99"], 3),
                        _fmt(r["tpot_ms"]["p50"], 3),
                        _fmt(r["tpot_ms"]["p99"], 3),
                        _fmt(r["itl_ms"]["p50"], 3),
                        _fmt(r["e2e_ms"]["p50"], 3),
                        _fmt(r["e2e_ms"]["p99"], 3),
                    ]
                )
        lines += [
            f"## Ratios to {base} (target / {base})",
            "",
            "Above 1: more throughput, or longer latency, than the base. Interleaved rounds, same prompts.",
            "",
            *_table(header, rows),
        ]

    for metric in LATENCIES:
        header = [name, "target", "count", "mean", *(f"p{p}" for p in PERCENTILES)]
        rows = []
        for level in report["levels"]:
            for label, s in level["summaries"].items():
                d = s[f"{metric}_ms"]
                rows.append(
                    [
                        _level(level["level"]),
                        label,
                        str(d["count"]),
                        _fmt(d["mean"]),
                        *(_fmt(d[f"p{p}"]) for p in PERCENTILES),
                    ]
                )
        lines += [f"## {LATENCY_NAMES[metric].capitalize()} (ms)", "", *_table(header, rows)]

    if any(level.get("engine") for level in report["levels"]):
        lines += _engine(report)

    errors = [
        (level["level"], label, code, n)
        for level in report["levels"]
        for label, s in level["summaries"].items()
        for code, n in s["errors"].items()
    ]
    lines += ["## Errors by code", ""]
    if errors:
        lines += _table([name, "target", "code", "requests"], [[_level(lv), t, c, str(n)] for lv, t, c, n in errors])
        samples: dict[str, str] = {}
        for r in report["requests"]:
            if not r["ok"] and not r.get("cancelled"):
                samples.setdefault(r["error_code"], r["error"])
        lines += [f"- `{code}`: {message}" for code, message in samples.items()] + [""]
    else:
        lines += ["None.", ""]
    return "\n".join(lines)


def _sweep(sweep: dict[str, Any]) -> list[str]:
    """Each target's knee: the fewest streams that reach (nearly) its whole throughput."""
    rows = []
    for label, knee in sweep["knees"].items():
        peak = f"{_fmt(knee['peak']['output_throughput'])} at {_level(knee['peak']['concurrency'])}"
        if knee["found"]:
            figures = [
                _level(knee["concurrency"]),
                _fmt(knee["output_throughput"]),
                _fmt(knee["request_throughput"], 2),
                *(_fmt(knee[m][p]) for m in ("ttft_ms", "itl_ms") for p in ("p50", "p99")),
            ]
        else:
            figures = ["none", *["-"] * 6]
        rows.append([label, *figures, peak, knee["reason"]])
    header = ["target", "knee", "out tok/s", "req/s", "TTFT p50", "TTFT p99", "ITL p50", "ITL p99", "peak out tok/s"]
    return [
        "## Saturation sweep",
        "",
        f"Closed loop at {', '.join(_level(v) for v in sweep['levels_planned'])} streams until saturated; "
        f"stopped: {sweep['stopped']}. A level stops growing below {sweep['knee_gain']:.0%} more output tokens/s "
        f"per doubling of the streams; the knee is the last level before throughput went flat while latency "
        f"climbed, confirmed {sweep['past_knee']} levels past it (or failed requests, or falling throughput). "
        "Latencies in ms.",
        "",
        *_table([*header, "why the sweep stopped"], rows),
    ]


def _engine(report: dict[str, Any]) -> list[str]:
    """The engine's own view of each level, read from the target's /metrics while it was driven."""
    rows = []
    for level in report["levels"]:
        for label, e in level.get("engine", {}).items():
            rows.append(
                [
                    _level(level["level"]),
                    label,
                    *(
                        f"{_fmt(e[name]['mean'])} / {_fmt(e[name]['max'])}"
                        for name in ("running", "waiting", "kv_cache_usage_pct")
                    ),
                    _fmt(e["preemptions"], 0),
                    str(e["samples"]),
                    e["problem"] or "",
                ]
            )
    header = [
        report["level_name"],
        "target",
        "running (mean / max)",
        "waiting (mean / max)",
        "KV cache % (mean / max)",
        "preemptions",
        "samples",
        "problem reading /metrics",
    ]
    return [
        "## Engine during each level (from /metrics)",
        "",
        "vLLM's `vllm:num_requests_running`, `vllm:num_requests_waiting` and `vllm:kv_cache_usage_perc` read "
        "while the target was driven, and `vllm:num_preemptions_total` counted from the start to the end of "
        "its load; each summed over its labels.",
        "",
        *_table(header, rows),
    ]


def _soak(soak: dict[str, Any]) -> list[str]:
    """The verdicts of a soak (`--soak`), and the figures behind them."""
    requests, drain, memory = soak["requests"], soak["drain"], soak["memory"]
    baseline, end = memory["baseline"] or {}, memory["end"] or {}
    rows = [[v["name"], "pass" if v["passed"] else "**FAIL**", v["detail"]] for v in soak["verdicts"]]
    figures = [
        ["load", f"{soak['load_s']:,.0f} s, cancel rate {soak['cancel_rate']:g}"],
        [
            "requests",
            f"{requests['requests']} sent: {requests['completed']} completed, {requests['cancelled']} cancelled, "
            f"{requests['failed']} failed",
        ],
        [
            "engine after the load",
            f"running {_fmt(drain['running'], 0)}, waiting {_fmt(drain['waiting'], 0)} "
            f"after {drain['waited_s']:.1f} s (limit {drain['timeout_s']:g} s)",
        ],
        [
            "server RSS (process tree)",
            f"{_fmt(baseline.get('rss_mib'))} MiB at {_fmt(baseline.get('t_s'), 0)} s, "
            f"{_fmt(end.get('rss_mib'))} MiB at {_fmt(end.get('t_s'), 0)} s: "
            f"{_fmt(memory['growth_pct'], 2)} % (limit {memory['max_growth_pct']:g} %); peak after warm-up "
            f"{_fmt(memory['peak_mib'])} MiB, {_fmt(end.get('processes'))} processes",
        ],
    ]
    return [
        f"## Soak: {'PASSED' if soak['passed'] else 'FAILED'}",
        "",
        *_table(["verdict", "result", "detail"], rows),
        *_table(["what", "measured"], figures),
    ]


# ---------------------------------------------------------------- plots


def plots(report: dict[str, Any], out: Path) -> list[Path]:
    """Latency CDFs (one figure per metric, a panel per level, a line per target) and throughput and
    time to first token against the load level, every target on the same axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [t["label"] for t in report["targets"]]
    levels = [lv["level"] for lv in report["levels"]]
    name = report["level_name"]
    files = []

    for metric in LATENCIES:
        fig, axes = plt.subplots(1, len(levels), figsize=(4 * len(levels), 3.4), squeeze=False, sharey=True)
        for ax, level in zip(axes[0], levels, strict=True):
            for label in labels:
                values = _values(report["requests"], label, level, metric)
                if values:
                    xs = np.sort(values)
                    ax.plot(xs, np.arange(1, len(xs) + 1) / len(xs), label=label)
            ax.set_title(f"{name} {_level(level)}")
            ax.set_xlabel(f"{LATENCY_NAMES[metric]} (ms)")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("fraction of requests" if metric != "itl" else "fraction of tokens")
        if axes[0][0].get_legend_handles_labels()[0]:  # no line when no request completed
            axes[0][0].legend(fontsize="small")
        fig.tight_layout()
        files.append(_save(fig, out / f"cdf_{metric}.png"))

    def by_level(label: str, pick) -> list[Any]:  # None (no sample) plots as a gap
        return [pick(lv["summaries"][label]) for lv in report["levels"]]

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for label in labels:
        left.plot(levels, by_level(label, lambda s: s["output_throughput"]), marker="o", label=label)
        right.plot(levels, by_level(label, lambda s: s["request_throughput"]), marker="o", label=label)
    left.set_ylabel("output tokens / s")
    right.set_ylabel("requests / s")
    for ax in (left, right):
        _level_axis(ax, levels, name)
    left.legend(fontsize="small")
    fig.tight_layout()
    files.append(_save(fig, out / "throughput.png"))

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for i, label in enumerate(labels):
        color = f"C{i}"
        ax.plot(
            levels,
            by_level(label, lambda s: s["ttft_ms"]["p50"]),
            marker="o",
            color=color,
            label=f"{label} p50",
        )
        ax.plot(
            levels,
            by_level(label, lambda s: s["ttft_ms"]["p99"]),
            marker="x",
            linestyle="--",
            color=color,
            label=f"{label} p99",
        )
    ax.set_ylabel("time to first token (ms)")
    _level_axis(ax, levels, name)
    ax.legend(fontsize="small")
    fig.tight_layout()
    files.append(_save(fig, out / "ttft.png"))
    return files


def _values(requests: list[dict[str, Any]], label: str, level: float, metric: str) -> list[float]:
    values: list[float] = []
    for r in requests:
        if r["ok"] and r["target"] == label and r["level"] == level:
            if metric == "itl":
                values.extend(v * 1000 for v in r["itl"])
            elif r[metric] is not None:
                values.append(r[metric] * 1000)
    return values


def _level_axis(ax, levels: list[float], name: str) -> None:
    if len(levels) > 1 and min(levels) > 0 and max(levels) / min(levels) >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xticks(levels, [_level(v) for v in levels])
    ax.set_xlabel(name)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
