"""`wai loadtest --soak`: its three verdicts, worked by hand, and whole short soaks against a canned
target whose engine counts and memory the test controls (a process tree that holds or grows memory)."""

import argparse
import json
import subprocess
import sys
import textwrap
import time

import pytest

from loadtests.cli import add_arguments, main
from loadtests.soak import (
    Drain,
    RssSample,
    default_rss_warmup,
    drain_verdict,
    errors_verdict,
    memory_verdict,
    metric_sum,
    metrics_url,
    problems,
    rss_growth_pct,
    tree_rss,
)
from tests.support.http_target import CannedHandler

MiB = 2**20

# ---------------------------------------------------------------- verdicts


def summary(completed=10, cancelled=2, failed=0, errors=None) -> dict:
    return {"completed": completed, "cancelled": cancelled, "failed": failed, "errors": errors or {}}


def test_errors_pass_only_without_failures_and_with_completed_requests():
    assert errors_verdict(summary()).passed
    assert errors_verdict(summary()).detail == "10 completed, 2 cancelled, 0 failed"
    failed = errors_verdict(summary(failed=1, errors={"500": 1}))
    assert not failed.passed and "{'500': 1}" in failed.detail
    assert not errors_verdict(summary(completed=0, cancelled=5)).passed  # nothing but cancellations proves nothing


def test_drained_only_when_both_counts_were_read_as_zero():
    assert drain_verdict(Drain(running=0, waiting=0, waited_s=1.5), 60).passed
    assert not drain_verdict(Drain(running=1, waiting=0, waited_s=60), 60).passed
    assert not drain_verdict(Drain(running=0, waiting=2, waited_s=60), 60).passed
    unread = drain_verdict(Drain(problem="GET http://h/metrics answered 401"), 60)
    assert not unread.passed and "401" in unread.detail
    assert not drain_verdict(Drain(running=0, waiting=None), 60).passed  # a series missing from /metrics


def test_memory_growth_is_measured_from_the_baseline_and_bounded_strictly():
    base = RssSample(30.0, 1000 * MiB, 3)
    assert rss_growth_pct(1000, 1099) == pytest.approx(9.9)
    assert rss_growth_pct(1000, 900) == pytest.approx(-10.0)
    assert memory_verdict(base, RssSample(120.0, 1099 * MiB, 3), 10).passed
    assert not memory_verdict(base, RssSample(120.0, 1100 * MiB, 3), 10).passed  # 10 % is already too much
    assert memory_verdict(base, RssSample(120.0, 500 * MiB, 3), 10).passed
    assert not memory_verdict(base, None, 10).passed  # the server died
    assert not memory_verdict(None, None, 10).passed
    with pytest.raises(ValueError):
        rss_growth_pct(0, 10)


def test_engine_counts_are_summed_over_labels():
    text = textwrap.dedent(
        """\
        # HELP vllm:num_requests_running Number of requests in model execution batches.
        # TYPE vllm:num_requests_running gauge
        vllm:num_requests_running{engine="0",model_name="a"} 2.0
        vllm:num_requests_running{engine="1",model_name="b"} 1.0
        vllm:num_requests_running_total_like{engine="0"} 7.0
        vllm:num_requests_waiting{engine="0",model_name="a"} 0.0
        plain_gauge 4
        """
    )
    assert metric_sum(text, "vllm:num_requests_running") == 3.0
    assert metric_sum(text, "vllm:num_requests_waiting") == 0.0
    assert metric_sum(text, "plain_gauge") == 4.0
    assert metric_sum(text, "vllm:num_preemptions_total") is None


def test_metrics_are_read_at_the_root_of_any_target_url():
    for url in ("http://h:8000", "http://h:8000/v1", "http://h:8000/client/v4/accounts/x/ai"):
        assert metrics_url(url) == "http://h:8000/metrics"


def options(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--soak", *argv])


def test_soak_options_are_checked():
    assert problems(options("--url", "http://h", "--duration", "60", "--pid", "1")) == []
    assert problems(options("--url", "http://h", "--duration", "60", "--serve", "wai serve --port {port}")) == []
    assert problems(options("--url", "http://h", "--pid", "1")) == ["--soak needs --duration"]
    assert problems(options("--url", "http://h", "--duration", "60")) == [
        "--soak needs the server's --pid, or --serve CMD to start it"
    ]
    found = problems(options("--url", "a", "--url", "b", "--rate", "1", "--duration", "9", "--pid", "1"))
    assert found == ["--soak takes one --url", "--soak runs a closed loop: give --concurrency, not --rate"]
    found = problems(options("--url", "a", "--concurrency", "1,2", "--duration", "9", "--pid", "1"))
    assert found == ["--soak takes one --concurrency"]
    found = problems(options("--url", "a", "--duration", "60", "--pid", "1", "--rss-warmup", "60"))
    assert found == ["--rss-warmup must be shorter than --duration"]
    assert default_rss_warmup(120) == 24 and default_rss_warmup(1800) == 300


# ---------------------------------------------------------------- whole soaks on a canned target


class CannedEngine(CannedHandler):
    """Answers every run request with a short stream, and /metrics with `running` and `waiting`."""

    running = 0
    waiting = 0
    fail_every = 0  # answer every n-th request with a 500
    served = 0

    def do_GET(self):
        body = (
            f'vllm:num_requests_running{{model_name="m"}} {CannedEngine.running}\n'
            f'vllm:num_requests_waiting{{model_name="m"}} {CannedEngine.waiting}\n'
        ).encode()
        self.answer(200 if self.path == "/metrics" else 404, body)

    def do_POST(self):
        self.read_body()
        CannedEngine.served += 1
        if CannedEngine.fail_every and CannedEngine.served % CannedEngine.fail_every == 0:
            self.answer(500, b"oops!")
            return
        usage = {"prompt_tokens": 3, "completion_tokens": 8, "total_tokens": 11}
        events = [{"response": f"t{i} "} for i in range(8)] + [{"response": "", "usage": usage}]
        body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        try:
            for i in range(0, len(body), 64):  # a little at a time, so that cancellations land mid-stream
                self.wfile.write(body[i : i + 64])
                self.wfile.flush()
                time.sleep(0.005)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def canned_engine(http_target):
    CannedEngine.running = CannedEngine.waiting = CannedEngine.fail_every = CannedEngine.served = 0
    return http_target(CannedEngine)


# A parent that starts one child, which takes 40 MiB at once and then `GROWTH` MiB more every
# 0.1 s; the parent itself never grows, so only a sum over the whole tree sees the growth.
CHILD = (
    "import time\nheld = [b'x' * (40 << 20)]\nwhile True:\n    time.sleep(0.1)\n    held.append(b'x' * ({} << 20))\n"
)
PARENT = "import subprocess, sys\nsubprocess.run([sys.executable, '-c', sys.argv[1]])\n"


@pytest.fixture
def process_tree():
    started = []

    def start(growth_mib: int) -> int:
        parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD.format(growth_mib)])
        started.append(parent)
        deadline = time.monotonic() + 10
        while (measured := tree_rss(parent.pid)) is None or measured[1] < 2 or measured[0] < 60 * MiB:
            assert time.monotonic() < deadline, "the child did not start"
            time.sleep(0.05)
        return parent.pid

    yield start
    import psutil

    for parent in started:
        for child in psutil.Process(parent.pid).children(recursive=True):
            child.kill()
        parent.kill()
        parent.wait()


def soak(url: str, pid: int, out, *extra: str) -> int:
    return main(
        [
            "--soak",
            "--url",
            url,
            "--pid",
            str(pid),
            "--concurrency",
            "4",
            "--duration",
            "2",
            "--rss-warmup",
            "0.5",
            "--cancel-rate",
            "0.3",
            "--output-tokens",
            "8",
            "--warmup",
            "0",
            "--no-progress",
            "--out",
            str(out),
            *extra,
        ]
    )


def verdicts(out) -> dict[str, bool]:
    report = json.loads((out / "report.json").read_text())
    return {v["name"]: v["passed"] for v in report["soak"]["verdicts"]}


def test_a_steady_server_passes_and_the_report_says_why(canned_engine, process_tree, tmp_path):
    assert soak(canned_engine, process_tree(0), tmp_path) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    soak_report = report["soak"]
    assert soak_report["passed"] and verdicts(tmp_path) == {"errors": True, "drained": True, "memory": True}
    requests = soak_report["requests"]
    assert requests["completed"] > 10 and requests["cancelled"] > 3 and requests["failed"] == 0
    memory = soak_report["memory"]
    assert memory["baseline"]["processes"] == 2 and memory["baseline"]["rss_mib"] > 40
    assert 0.5 <= memory["baseline"]["t_s"] < 1.0 and memory["end"]["t_s"] >= 2
    assert abs(memory["growth_pct"]) < 10 and len(memory["samples"]) >= 2
    assert soak_report["drain"]["running"] == 0 and soak_report["drain"]["waiting"] == 0
    markdown = (tmp_path / "report.md").read_text()
    assert "## Soak: PASSED" in markdown and "| memory | pass |" in markdown


def test_memory_growing_in_a_child_process_fails(canned_engine, process_tree, tmp_path):
    assert soak(canned_engine, process_tree(5), tmp_path) == 1  # +50 MiB/s for 1.5 s on about 80 MiB
    assert verdicts(tmp_path) == {"errors": True, "drained": True, "memory": False}
    assert json.loads((tmp_path / "report.json").read_text())["soak"]["memory"]["growth_pct"] > 20
    assert "## Soak: FAILED" in (tmp_path / "report.md").read_text()


def test_an_engine_that_keeps_running_requests_fails(canned_engine, process_tree, tmp_path):
    CannedEngine.waiting = 1
    assert soak(canned_engine, process_tree(0), tmp_path, "--drain-timeout", "1") == 1
    assert verdicts(tmp_path) == {"errors": True, "drained": False, "memory": True}
    drain = json.loads((tmp_path / "report.json").read_text())["soak"]["drain"]
    assert drain["waiting"] == 1 and drain["waited_s"] >= 1


def test_errors_on_requests_that_were_not_cancelled_fail(canned_engine, process_tree, tmp_path):
    CannedEngine.fail_every = 7
    assert soak(canned_engine, process_tree(0), tmp_path) == 1
    assert verdicts(tmp_path) == {"errors": False, "drained": True, "memory": True}


def test_a_pid_that_is_not_running_is_refused(canned_engine, tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert soak(canned_engine, gone.pid, tmp_path) == 2


def test_serve_starts_the_server_on_a_free_port_and_stops_it(tmp_path):
    # A stand-in server: any command line with {port}; here Python's own HTTP server answering /readyz
    # with a 404 first would never be ready, so it serves a folder holding a `readyz` file.
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "readyz").write_text("ok")
    (tmp_path / "root" / "metrics").write_text("vllm:num_requests_running 0\nvllm:num_requests_waiting 0\n")
    command = f"{sys.executable} -m http.server --bind 127.0.0.1 --directory {tmp_path / 'root'} {{port}}"
    code = main(
        [
            "--soak",
            "--serve",
            command,
            "--url",
            "http://127.0.0.1:{port}",
            "--duration",
            "1",
            "--rss-warmup",
            "0.2",
            "--warmup",
            "0",
            "--no-progress",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 1  # the folder server answers POST with 501: every request fails
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert verdicts(tmp_path / "out") == {"errors": False, "drained": True, "memory": True}
    assert report["soak"]["requests"]["errors"] == {"501": report["soak"]["requests"]["failed"]}
    assert "{port}" not in report["targets"][0]["url"]
    log = (tmp_path / "out" / "server.log").read_text()
    assert "GET /readyz" in log and "POST /client/v4/accounts/loadtest/ai/run/" in log
    pid = report["soak"]["memory"]["pid"]
    import psutil

    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # stopped
