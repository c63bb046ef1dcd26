"""report.md: the run's tables, one section per function, in the order the report shows them."""

from __future__ import annotations

from typing import Any

from loadtests.display import level_label, number
from loadtests.stats import LATENCIES, LATENCY_NAMES, PERCENTILES


def markdown(report: dict[str, Any]) -> str:
    lines = heading(report)
    if report.get("soak"):
        lines += soak_section(report["soak"])
    if report.get("sweep"):
        lines += sweep_section(report["sweep"])
    if report["slo"]:
        lines += [f"Goodput SLO (ms): {report['slo']}", ""]
    lines += summary_section(report)
    if any(level["ratios"] for level in report["levels"]):
        lines += ratios_section(report)
    for metric in LATENCIES:
        lines += latency_section(report, metric)
    if any(level.get("engine") for level in report["levels"]):
        lines += engine_section(report)
    lines += errors_section(report)
    return "\n".join(lines)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]


def heading(report: dict[str, Any]) -> list[str]:
    m = report["machine"]
    return [
        "# Load test report",
        "",
        f"{report['created']}, {report['mode']} loop, on {m['cpus']} CPUs ({m['cpu']}), {m['memory_gib']} GiB.",
        "",
        "Targets:",
        "",
        *(f"- **{t['label']}**: {t['protocol']} at {t['url']}, model `{t['model']}`" for t in report["targets"]),
        "",
    ]


SUMMARY_HEADER = [
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


def summary_section(report: dict[str, Any]) -> list[str]:
    """Each target at each level: requests, throughput, and the latencies' median and p99."""
    rows = [
        [
            level_label(level["level"]),
            label,
            str(s["completed"]),
            str(s["failed"]),
            str(s.get("cancelled", 0)),
            number(s["request_throughput"], 2),
            number(s["output_throughput"]),
            number(s.get("goodput"), 2),
            number(s["mean_output_tokens"]),
            *(number(s[f"{m}_ms"][p]) for m in ("ttft", "tpot", "itl", "e2e") for p in ("p50", "p99")),
        ]
        for level in report["levels"]
        for label, s in level["summaries"].items()
    ]
    return ["## Summary (latencies in ms)", "", *table([report["level_name"], *SUMMARY_HEADER], rows)]


# Each ratio as (column, figure, percentile or None for a plain figure).
RATIOS = [
    ("out tok/s", "output_throughput", None),
    ("req/s", "request_throughput", None),
    ("mean out tok", "mean_output_tokens", None),
    ("TTFT p50", "ttft_ms", "p50"),
    ("TTFT p90", "ttft_ms", "p90"),
    ("TTFT p99", "ttft_ms", "p99"),
    ("TPOT p50", "tpot_ms", "p50"),
    ("TPOT p99", "tpot_ms", "p99"),
    ("ITL p50", "itl_ms", "p50"),
    ("E2E p50", "e2e_ms", "p50"),
    ("E2E p99", "e2e_ms", "p99"),
]


def ratios_section(report: dict[str, Any]) -> list[str]:
    """Each target over the first one, level by level."""
    base = report["targets"][0]["label"]
    rows = [
        [
            level_label(level["level"]),
            label,
            *(number(r[name] if p is None else r[name][p], 3) for _, name, p in RATIOS),
        ]
        for level in report["levels"]
        for label, r in level["ratios"].items()
    ]
    return [
        f"## Ratios to {base} (target / {base})",
        "",
        "Above 1: more throughput, or longer latency, than the base. Interleaved rounds, same prompts.",
        "",
        *table([report["level_name"], "target", *(column for column, _, _ in RATIOS)], rows),
    ]


def latency_section(report: dict[str, Any], metric: str) -> list[str]:
    """One latency's distribution per target and level."""
    header = [report["level_name"], "target", "count", "mean", *(f"p{p}" for p in PERCENTILES)]
    rows = []
    for level in report["levels"]:
        for label, s in level["summaries"].items():
            d = s[f"{metric}_ms"]
            rows.append(
                [
                    level_label(level["level"]),
                    label,
                    str(d["count"]),
                    number(d["mean"]),
                    *(number(d[f"p{p}"]) for p in PERCENTILES),
                ]
            )
    return [f"## {LATENCY_NAMES[metric].capitalize()} (ms)", "", *table(header, rows)]


def errors_section(report: dict[str, Any]) -> list[str]:
    """Failed requests by error code, with one message of each code."""
    errors = [
        (level["level"], label, code, n)
        for level in report["levels"]
        for label, s in level["summaries"].items()
        for code, n in s["errors"].items()
    ]
    if not errors:
        return ["## Errors by code", "", "None.", ""]
    rows = [[level_label(lv), t, c, str(n)] for lv, t, c, n in errors]
    samples: dict[str, str] = {}
    for r in report["requests"]:
        if not r["ok"] and not r.get("cancelled"):
            samples.setdefault(r["error_code"], r["error"])
    return [
        "## Errors by code",
        "",
        *table([report["level_name"], "target", "code", "requests"], rows),
        *(f"- `{code}`: {message}" for code, message in samples.items()),
        "",
    ]


def sweep_section(sweep: dict[str, Any]) -> list[str]:
    """Each target's knee: the fewest streams that reach (nearly) its whole throughput."""
    rows = []
    for label, knee in sweep["knees"].items():
        peak = f"{number(knee['peak']['output_throughput'])} at {level_label(knee['peak']['concurrency'])}"
        if knee["found"]:
            figures = [
                level_label(knee["concurrency"]),
                number(knee["output_throughput"]),
                number(knee["request_throughput"], 2),
                *(number(knee[m][p]) for m in ("ttft_ms", "itl_ms") for p in ("p50", "p99")),
            ]
        else:
            figures = ["none", *["-"] * 6]
        rows.append([label, *figures, peak, knee["reason"]])
    header = ["target", "knee", "out tok/s", "req/s", "TTFT p50", "TTFT p99", "ITL p50", "ITL p99", "peak out tok/s"]
    return [
        "## Saturation sweep",
        "",
        f"Closed loop at {', '.join(level_label(v) for v in sweep['levels_planned'])} streams until saturated; "
        f"stopped: {sweep['stopped']}. A level stops growing below {sweep['knee_gain']:.0%} more output tokens/s "
        f"per doubling of the streams; the knee is the last level before throughput went flat while latency "
        f"climbed, confirmed {sweep['past_knee']} levels past it (or failed requests, or falling throughput). "
        "Latencies in ms.",
        "",
        *table([*header, "why the sweep stopped"], rows),
    ]


def engine_section(report: dict[str, Any]) -> list[str]:
    """The engine's own view of each level, read from the target's /metrics while it was driven."""
    rows = []
    for level in report["levels"]:
        for label, e in level.get("engine", {}).items():
            rows.append(
                [
                    level_label(level["level"]),
                    label,
                    *(
                        f"{number(e[name]['mean'])} / {number(e[name]['max'])}"
                        for name in ("running", "waiting", "kv_cache_usage_pct")
                    ),
                    number(e["preemptions"], 0),
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
        *table(header, rows),
    ]


def soak_section(soak: dict[str, Any]) -> list[str]:
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
            f"running {number(drain['running'], 0)}, waiting {number(drain['waiting'], 0)} "
            f"after {drain['waited_s']:.1f} s (limit {drain['timeout_s']:g} s)",
        ],
        [
            "server RSS (process tree)",
            f"{number(baseline.get('rss_mib'))} MiB at {number(baseline.get('t_s'), 0)} s, "
            f"{number(end.get('rss_mib'))} MiB at {number(end.get('t_s'), 0)} s: "
            f"{number(memory['growth_pct'], 2)} % (limit {memory['max_growth_pct']:g} %); peak after warm-up "
            f"{number(memory['peak_mib'])} MiB, {number(end.get('processes'))} processes",
        ],
    ]
    return [
        f"## Soak: {'PASSED' if soak['passed'] else 'FAILED'}",
        "",
        *table(["verdict", "result", "detail"], rows),
        *table(["what", "measured"], figures),
    ]
