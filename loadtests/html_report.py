"""report.html: one file with the run's tables and plots, readable offline.

It needs no script, font or link to fetch. The plots are matplotlib figures saved as SVG (text drawn
as paths) and written inline.

Plots against the load level: output and request throughput (the knee marked, after a sweep), time to
first token and inter-token latency p50 and p99, and, where the target's /metrics was read, the
engine's running and waiting requests, KV cache usage and preemptions.
"""

from __future__ import annotations

import io
import re
from html import escape
from pathlib import Path
from typing import Any

from loadtests.display import level_axis, level_label, number

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; }
td.text, th.text { text-align: left; }
figure { margin: 0 0 1.5em; }
figcaption { font-size: 0.9em; color: #555; }
svg { max-width: 100%; height: auto; }
"""


def write(report: dict[str, Any], out: Path) -> Path:
    path = out / "report.html"
    path.write_text(page(report))
    return path


def page(report: dict[str, Any]) -> str:
    m = report["machine"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8"/>',
        "<title>Load test report</title>",
        f"<style>{STYLE}</style>",
        "</head>",
        "<body>",
        "<h1>Load test report</h1>",
        _p(f"{report['created']}, {report['mode']} loop, on {m['cpus']} CPUs ({m['cpu']}), {m['memory_gib']} GiB."),
        "<ul>",
        *(
            f"<li><b>{escape(t['label'])}</b>: {escape(t['protocol'])} at {escape(t['url'])}, "
            f"model <code>{escape(t['model'])}</code></li>"
            for t in report["targets"]
        ),
        "</ul>",
    ]
    if sweep := report.get("sweep"):
        parts += ["<h2>Saturation sweep</h2>", _p(f"Stopped: {sweep['stopped']}."), _knee_table(sweep)]
    parts += ["<h2>Levels</h2>", _levels_table(report)]
    parts += ["<h2>Plots</h2>", *(_figure(svg, caption) for svg, caption in figures(report))]
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def _p(text: str) -> str:
    return f"<p>{escape(text)}</p>"


def _html_table(header: list[str], rows: list[list[str]], text_columns: tuple[int, ...]) -> str:
    """A table whose `text_columns` are left-aligned, the figures right-aligned."""

    def cells(tag: str, values: list[str]) -> str:
        return "".join(
            f'<{tag} class="text">{escape(v)}</{tag}>' if i in text_columns else f"<{tag}>{escape(v)}</{tag}>"
            for i, v in enumerate(values)
        )

    body = "".join(f"<tr>{cells('td', row)}</tr>" for row in rows)
    return f"<table><thead><tr>{cells('th', header)}</tr></thead><tbody>{body}</tbody></table>"


def _knee_table(sweep: dict[str, Any]) -> str:
    rows = []
    for label, knee in sweep["knees"].items():
        figures = (
            [
                level_label(knee["concurrency"]),
                number(knee["output_throughput"]),
                number(knee["request_throughput"], 2),
                *(number(knee[m][p]) for m in ("ttft_ms", "itl_ms") for p in ("p50", "p99")),
            ]
            if knee["found"]
            else ["none", *["-"] * 6]
        )
        rows.append([label, *figures, knee["reason"]])
    header = [
        "target",
        "knee (streams)",
        "out tok/s",
        "req/s",
        "TTFT p50 ms",
        "TTFT p99 ms",
        "ITL p50 ms",
        "ITL p99 ms",
    ]
    return _html_table([*header, "why the sweep stopped"], rows, text_columns=(0, len(header)))


def _levels_table(report: dict[str, Any]) -> str:
    header = [report["level_name"], "target", "ok", "failed", "out tok/s", "req/s"]
    header += ["TTFT p50 ms", "TTFT p99 ms", "ITL p50 ms", "ITL p99 ms"]
    engine = any(level.get("engine") for level in report["levels"])
    if engine:
        header += ["running mean / max", "waiting mean / max", "KV cache % mean / max", "preemptions"]
    rows = []
    for level in report["levels"]:
        for label, s in level["summaries"].items():
            row = [level_label(level["level"]), label, str(s["completed"]), str(s["failed"])]
            row += [number(s["output_throughput"]), number(s["request_throughput"], 2)]
            row += [number(s[f"{m}_ms"][p]) for m in ("ttft", "itl") for p in ("p50", "p99")]
            if engine:
                e = level.get("engine", {}).get(label)
                if e is None:
                    row += ["-"] * 4
                else:
                    row += [
                        f"{number(e[n]['mean'])} / {number(e[n]['max'])}"
                        for n in ("running", "waiting", "kv_cache_usage_pct")
                    ]
                    row.append(number(e["preemptions"], 0))
            rows.append(row)
    return _html_table(header, rows, text_columns=(1,))


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>"


# ---------------------------------------------------------------- plots


def figures(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(inline SVG, caption) of each plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [t["label"] for t in report["targets"]]
    levels = [lv["level"] for lv in report["levels"]]
    name = report["level_name"]
    knees = (report.get("sweep") or {}).get("knees", {})

    def series(label: str, pick) -> list[Any]:  # None (no sample) plots as a gap
        return [pick(lv["summaries"][label]) for lv in report["levels"]]

    made = []
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, label in enumerate(labels):
        color = f"C{i}"
        left.plot(levels, series(label, lambda s: s["output_throughput"]), marker="o", color=color, label=label)
        right.plot(levels, series(label, lambda s: s["request_throughput"]), marker="o", color=color, label=label)
        knee = knees.get(label)
        if knee and knee["found"]:
            left.axvline(knee["concurrency"], color=color, linestyle=":", alpha=0.7)
            left.plot([knee["concurrency"]], [knee["output_throughput"]], marker="*", markersize=15, color=color)
            left.annotate(
                f"knee {label}: {level_label(knee['concurrency'])} streams",
                (knee["concurrency"], knee["output_throughput"]),
                textcoords="offset points",
                xytext=(6, -14),
                fontsize="small",
                color=color,
            )
    left.set_ylabel("output tokens / s")
    left.set_title("output throughput")
    right.set_ylabel("requests / s")
    right.set_title("request throughput")
    for ax in (left, right):
        level_axis(ax, levels, name)
    left.legend(fontsize="small")
    caption = "Throughput against the load level"
    made.append((_svg(fig, 0), caption + (" (star: the knee)." if knees else ".")))

    fig, (ttft, itl) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, label in enumerate(labels):
        for ax, metric in ((ttft, "ttft_ms"), (itl, "itl_ms")):
            ax.plot(
                levels, series(label, lambda s, m=metric: s[m]["p50"]), marker="o", color=f"C{i}", label=f"{label} p50"
            )
            ax.plot(
                levels,
                series(label, lambda s, m=metric: s[m]["p99"]),
                marker="x",
                linestyle="--",
                color=f"C{i}",
                label=f"{label} p99",
            )
    ttft.set_ylabel("time to first token (ms)")
    ttft.set_title("time to first token")
    itl.set_ylabel("inter-token latency (ms)")
    itl.set_title("inter-token latency")
    for ax in (ttft, itl):
        level_axis(ax, levels, name)
        ax.legend(fontsize="small")
    made.append((_svg(fig, 1), "Latency against the load level: p50 (solid) and p99 (dashed)."))

    if any(level.get("engine") for level in report["levels"]):
        made.append((_svg(_engine_figure(report, labels, levels, name), 2), _ENGINE_CAPTION))
    return made


_ENGINE_CAPTION = (
    "The engine during each level, from the target's /metrics: running and waiting requests and KV cache "
    "usage (mean solid, max dashed) and preemptions counted over the level."
)


def _engine_figure(report: dict[str, Any], labels: list[str], levels: list[float], name: str):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(14, 3.6))
    panels = (
        ("running", "requests running"),
        ("waiting", "requests waiting"),
        ("kv_cache_usage_pct", "KV cache usage (%)"),
    )

    def engine(label: str, pick) -> list[Any]:
        values = []
        for level in report["levels"]:
            e = level.get("engine", {}).get(label)
            values.append(pick(e) if e else None)
        return [v if v is not None else float("nan") for v in values]

    for i, label in enumerate(labels):
        color = f"C{i}"
        for ax, (key, _) in zip(axes, panels, strict=False):
            ax.plot(
                levels, engine(label, lambda e, k=key: e[k]["mean"]), marker="o", color=color, label=f"{label} mean"
            )
            ax.plot(
                levels,
                engine(label, lambda e, k=key: e[k]["max"]),
                marker="x",
                linestyle="--",
                color=color,
                label=f"{label} max",
            )
        axes[3].plot(levels, engine(label, lambda e: e["preemptions"]), marker="o", color=color, label=label)
    for ax, (_, title) in zip(axes, panels, strict=False):
        ax.set_ylabel(title)
        ax.set_title(title)
    axes[2].set_ylim(top=100)
    axes[3].set_ylabel("preemptions per level")
    axes[3].set_title("preemptions")
    for ax in axes:
        level_axis(ax, levels, name)
    axes[0].legend(fontsize="small")
    return fig


def _svg(fig, number: int) -> str:
    """A figure as SVG to write inside HTML: without its XML prolog, and its ids made unique to it (several
    figures on one page would otherwise share ids such as their glyphs' and clip paths')."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    plt.close(fig)
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    prefix = f"fig{number}-"
    text = re.sub(r'\bid="', f'id="{prefix}', text)
    text = re.sub(r'href="#', f'href="#{prefix}', text)
    return text.replace("url(#", f"url(#{prefix}")
