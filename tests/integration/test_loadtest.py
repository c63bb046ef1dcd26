"""`wai loadtest` against the real server: a short run writes all three kinds of report."""

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from tests.support.repo import REAL_MODEL, ROOT
from tests.support.servers import RunningServer

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_a_short_run_writes_json_markdown_and_plots(server: RunningServer, tmp_path):
    out = tmp_path / "report"
    command = [
        sys.executable,
        "-m",
        "server.cli",
        "loadtest",
        "--url",
        server.base_url,
        "--protocol",
        "workers-ai",
        "--model",
        REAL_MODEL,
        "--concurrency",
        "1,2",
        "--num-requests",
        "2,4",
        "--output-tokens",
        "8",
        "--warmup",
        "1",
        "--slo",
        "ttft=60000,tpot=60000",
        "--no-progress",
        "--out",
        str(out),
    ]
    env = {**os.environ, "WAI_API_KEY": server.api_key}  # the key comes from the environment
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads((out / "report.json").read_text())
    assert [level["level"] for level in report["levels"]] == [1, 2]
    for level, expected in zip(report["levels"], (2, 4), strict=True):
        summary = level["summaries"]["A"]
        assert summary["completed"] == expected and summary["errors"] == {}, summary
        assert summary["good_requests"] == expected
        assert 0 < summary["output_tokens"] <= 8 * expected and summary["prompt_tokens"] > 0
        assert summary["output_throughput"] > 0 and summary["ttft_ms"]["p50"] > 0
    requests = report["requests"]
    assert len(requests) == 6 and all(r["ok"] and r["status"] == 200 for r in requests)
    assert all(r["ttft"] <= r["e2e"] and len(r["itl"]) <= r["output_tokens"] - 1 for r in requests)
    assert not any(r["usage_missing"] for r in requests)  # token counts came from the stream's usage
    assert server.api_key not in (out / "report.json").read_text()

    markdown = (out / "report.md").read_text()
    assert "## Summary (latencies in ms)" in markdown and "| 2 | A | 4 | 0 |" in markdown
    for name in ("cdf_ttft", "cdf_tpot", "cdf_itl", "cdf_e2e", "throughput", "ttft"):
        assert (out / f"{name}.png").read_bytes().startswith(PNG_MAGIC), name


def test_a_short_sweep_reports_the_engine_metrics_and_an_html_page(server: RunningServer, tmp_path):
    """`--sweep` on the real engine (OpenAI protocol) up to 4 streams: every level measured with the
    engine's own view of it, and a report.html that an XML parser reads with its plots inline."""
    out = tmp_path / "sweep"
    command = [
        *(sys.executable, "-m", "server.cli", "loadtest", "--sweep", "--max-concurrency", "4"),
        *("--url", server.base_url, "--protocol", "openai", "--num-requests", "2", "--output-tokens", "4"),
        *("--warmup", "1", "--scrape-interval", "0.5", "--no-progress", "--out", str(out)),
    ]
    env = {**os.environ, "WAI_API_KEY": server.api_key}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "knee A:" in done.stdout

    report = json.loads((out / "report.json").read_text())
    levels = report["levels"]
    assert [level["level"] for level in levels][:2] == [1, 2] and len(levels) <= 3  # 1, 2, 4 at most
    for level in levels:
        summary, engine = level["summaries"]["A"], level["engine"]["A"]
        assert summary["completed"] == 8 * level["level"] and summary["errors"] == {}, summary
        assert engine["problem"] is None and engine["samples"] >= 1, engine
        assert engine["running"]["max"] is not None
        assert engine["waiting"]["max"] is not None and engine["preemptions"] is not None
        assert 0 <= engine["kv_cache_usage_pct"]["max"] <= 100
    assert any(level["engine"]["A"]["running"]["max"] >= 1 for level in levels)  # read while requests ran
    sweep = report["sweep"]
    assert sweep["max_concurrency"] == 4 and set(sweep["knees"]) == {"A"} and sweep["stopped"]

    markdown = (out / "report.md").read_text()
    assert "## Saturation sweep" in markdown and "## Engine during each level (from /metrics)" in markdown
    page = ET.fromstring((out / "report.html").read_text())  # well-formed, or this raises
    assert len(list(page.iter("{http://www.w3.org/2000/svg}svg"))) == 3


@pytest.mark.parametrize("protocol", ["anthropic", "responses"])
def test_a_run_over_each_newer_api_counts_from_its_events(server: RunningServer, tmp_path, protocol):
    out = tmp_path / protocol
    command = [sys.executable, "-m", "server.cli", "loadtest", "--url", server.base_url, "--protocol", protocol]
    command += ["--model", REAL_MODEL, "--concurrency", "2", "--num-requests", "3", "--output-tokens", "8"]
    command += ["--warmup", "0", "--no-progress", "--out", str(out)]
    done = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, "WAI_API_KEY": server.api_key},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    requests = json.loads((out / "report.json").read_text())["requests"]
    assert len(requests) == 3 and all(r["ok"] and r["status"] == 200 for r in requests), requests
    assert not any(r["usage_missing"] for r in requests)  # the counts came from the stream's own usage
    assert all(r["prompt_tokens"] > 0 and 0 < r["output_tokens"] <= 8 and r["ttft"] <= r["e2e"] for r in requests)
