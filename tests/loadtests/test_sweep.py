"""`wai loadtest --sweep` end to end against a small stand-in engine with a known capacity.

The target (tests/loadtests/standin.py) generates at most a fixed number of tokens per second in all,
as a compute-bound engine does: its throughput grows with the streams up to the number it serves at
full speed and is flat past it while latency climbs, a real knee. Past its batch (`slots`) requests
queue, and its `/metrics` serves vLLM's running, waiting, KV cache and preemption series.
"""

import asyncio
import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from loadtests.cli import main
from loadtests.knee import MIN_GAIN, PAST_KNEE
from loadtests.prompts import synthetic_prompts
from loadtests.protocols import Sampling, Target
from loadtests.runner import LoadPlan
from loadtests.sweep import SweepSettings
from loadtests.sweep import sweep as run_sweep
from tests.loadtests.standin import TOKENS
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
SVG = "{http://www.w3.org/2000/svg}svg"


@pytest.fixture
def serve():
    """serve(slots, full_speed=None, queue=None, metrics=True) -> the root URL of a stand-in engine in its own process;
    every one started is stopped at the end."""
    processes = []

    def start(slots: int, full_speed: float | None = None, queue: int | None = None, metrics: bool = True) -> str:
        port = free_port()
        command = [sys.executable, "-m", "tests.loadtests.standin", "--port", str(port), "--slots", str(slots)]
        command += ["--streams-at-full-speed", str(full_speed)] if full_speed else []
        command += [*(["--queue", str(queue)] if queue is not None else []), *([] if metrics else ["--no-metrics"])]
        processes.append(subprocess.Popen(command, cwd=ROOT))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert processes[-1].poll() is None, "the stand-in engine exited"
            assert time.monotonic() < deadline, "the stand-in engine did not start"
            try:
                httpx.get(url + "/metrics", timeout=2)
                return url
            except httpx.TransportError:
                time.sleep(0.1)

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


def sweep(out, *argv: str) -> dict:
    common = ["--sweep", "--num-requests", "4", "--warmup", "1", "--scrape-interval", "0.05", "--no-progress"]
    assert main([*common, "--prompts", "synthetic", "--input-tokens", "4", *argv, "--out", str(out)]) == 0
    return json.loads((out / "report.json").read_text())


def test_the_sweep_finds_the_knee_at_the_engines_capacity_and_stops_past_it(serve, tmp_path):
    url = serve(slots=8, full_speed=3)  # flat from 3 streams on; past 8, requests queue
    report = sweep(tmp_path, "--url", url, "--max-concurrency", "64")

    # 1, 2, 4 streams raise the throughput; 8 and 16 only share it: the knee is 4, confirmed two levels past.
    assert [level["level"] for level in report["levels"]] == [1, 2, 4, 8, 16]
    knee = report["sweep"]["knees"]["A"]
    assert knee["found"] and knee["saturated"] and knee["concurrency"] == 4, knee
    assert report["sweep"]["stopped"] == "saturated" and report["sweep"]["max_concurrency"] == 64
    summaries = [level["summaries"]["A"] for level in report["levels"]]
    assert summaries[2]["output_throughput"] > 2.5 * summaries[0]["output_throughput"]  # 3 streams' worth, not 1
    assert summaries[4]["ttft_ms"]["p50"] > 2 * summaries[2]["ttft_ms"]["p50"]  # the queue shows in TTFT
    assert [s["requests"] for s in summaries] == [8, 16, 32, 64, 128]  # at least eight requests per stream
    assert knee["output_throughput"] == summaries[2]["output_throughput"]
    assert knee["ttft_ms"]["p99"] == summaries[2]["ttft_ms"]["p99"] and knee["itl_ms"]["p50"] > 0

    # The engine as its /metrics saw it: nothing queued below capacity, a full batch and a queue above.
    engine = [level["engine"]["A"] for level in report["levels"]]
    assert all(e["samples"] >= 1 and e["problem"] is None for e in engine), engine
    assert engine[0]["running"]["max"] == 1 and engine[0]["waiting"]["max"] == 0 and engine[0]["preemptions"] == 0
    assert engine[4]["running"]["max"] == 8 and engine[4]["waiting"]["max"] >= 4  # 16 streams, a batch of 8
    assert engine[4]["kv_cache_usage_pct"]["max"] == 100 and engine[4]["preemptions"] > 0

    markdown = (tmp_path / "report.md").read_text()
    assert "## Saturation sweep" in markdown and "## Engine during each level (from /metrics)" in markdown
    assert "| A | 4 |" in markdown
    check_html(tmp_path, plots=3, knees=["A"])


def test_two_targets_are_swept_level_by_level_until_both_saturate_or_the_cap(serve, tmp_path):
    small = serve(slots=64, full_speed=1.5)
    large = serve(64, metrics=False)
    report = sweep(
        tmp_path,
        *("--url", small, "--protocol", "workers-ai", "--label", "small"),
        *("--url", large, "--protocol", "openai", "--label", "large"),
        *("--model", "m", "--max-concurrency", "4", "--past-knee", "1"),
    )
    # `small` saturates at 4 (knee 2); `large` still grows at the cap: every level measured for both.
    assert [level["level"] for level in report["levels"]] == [1, 2, 4]
    knees = report["sweep"]["knees"]
    assert knees["small"]["concurrency"] == 2 and knees["small"]["saturated"], knees["small"]
    assert not knees["large"]["found"] and knees["large"]["reason"] == "throughput still growing"
    assert report["sweep"]["stopped"] == "reached --max-concurrency 4"
    assert all(level["summaries"]["large"]["completed"] > 0 for level in report["levels"])
    # A target without /metrics is measured all the same, and the report says why its engine columns are empty.
    engine = report["levels"][-1]["engine"]
    assert engine["small"]["running"]["max"] == 4 and engine["large"]["problem"].endswith("answered 404")
    assert engine["large"]["running"] == {"mean": None, "max": None}
    check_html(tmp_path, plots=3, knees=["small"])


def test_429s_end_the_sweep_at_the_level_where_they_appear(serve):
    url = serve(slots=3, queue=1)  # 4 streams fit (3 running, 1 queued); 8 do not
    target = Target("A", url, "workers-ai", "m")
    plan = LoadPlan(mode="closed", levels=[1.0, 2.0, 4.0, 8.0, 16.0], num_requests=[8, 16, 32, 64, 128])
    settings = SweepSettings(MIN_GAIN, PAST_KNEE, 0.05, {"A": (url + "/metrics", {})})
    result = asyncio.run(run_sweep([target], synthetic_prompts(8, 4, TOKENS), Sampling(), plan, settings))

    assert [r.level for r in result.results] == [1, 2, 4, 8]
    assert any(r.error_code == "429:3040" for r in result.results[-1].records["A"])
    knee = result.knees["A"]
    assert knee.saturated and "failed at concurrency 8" in knee.reason and knee.index == 2  # 4 streams
    assert result.stopped == "saturated" and set(result.engine) == {1, 2, 4, 8}


def test_sweep_options_are_checked(tmp_path, capsys):
    assert main(["--sweep", "--url", "http://h", "--max-concurrency", "0", "--out", str(tmp_path)]) == 2
    assert main(["--sweep", "--url", "http://h", "--num-requests", "4,8", "--out", str(tmp_path)]) == 2
    assert "one --num-requests" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a sweep chooses its own levels
        main(["--sweep", "--concurrency", "4", "--url", "http://h"])


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)


def check_html(out, plots: int, knees: list[str]) -> None:
    """report.html is one well-formed document (an XML parser reads it) with its plots inline."""
    text = (out / "report.html").read_text()
    root = ET.fromstring(text)  # raises on anything not well-formed
    svgs = list(root.iter(SVG))
    assert len(svgs) == plots
    ids = [e.get("id") for e in root.iter() if e.get("id")]
    assert len(ids) == len(set(ids)), "ids repeat across the inline plots"
    assert not [v for e in root.iter() for v in e.attrib.values() if "://" in v]  # nothing to fetch
    assert not list(root.iter("script")) and not list(root.iter("link"))
    for words in ("output tokens / s", "time to first token (ms)", "inter-token latency (ms)", "KV cache usage (%)"):
        assert words in text, words  # in the figure captions and tables (the SVG text itself is drawn as paths)
    for label in knees:
        assert f"knee {label}" in text
    parser = _Tags()
    parser.feed(text)
    assert parser.tags.count("svg") == plots and "table" in parser.tags
