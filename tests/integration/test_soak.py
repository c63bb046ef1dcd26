"""A 40-second soak of the session server: 4 streams in flight, a fifth of them left mid-answer by
their client, then the three verdicts of `wai loadtest --soak` (no errors but the cancellations, the
engine's running and waiting counts back to 0, the server's memory, engine core included, grown
less than 10 % after a 12 s warm-up), checked against the server's own counters. The 30-minute run
is `make soak` (docs/reliability.md, "Soak")."""

import json
import os
import shutil
import subprocess
import sys
import time

from tests.support.metrics import scrape
from tests.support.repo import ARTIFACTS, REAL_MODEL, ROOT
from tests.support.servers import RunningServer
from tests.support.waiting import wait_for

DURATION_S = 40
RSS_WARMUP_S = 12
WARMUP_REQUESTS = 2


def test_a_short_soak_with_cancellations_passes_its_verdicts(server: RunningServer):
    out = ARTIFACTS / "soak"  # kept after the run: report.md says what failed, and why
    shutil.rmtree(out, ignore_errors=True)  # never read an earlier run's report
    wait_for(lambda: scrape(server).value("wai_requests_in_flight") == 0, "earlier requests to finish")
    before = scrape(server)
    command = [
        sys.executable,
        "-m",
        "server.cli",
        "loadtest",
        "--soak",
        "--url",
        server.base_url,
        "--pid",
        str(server.process.pid),
        "--model",
        REAL_MODEL,
        "--concurrency",
        "4",
        "--duration",
        str(DURATION_S),
        "--rss-warmup",
        str(RSS_WARMUP_S),
        "--cancel-rate",
        "0.2",
        "--output-tokens",
        "32",
        "--warmup",
        str(WARMUP_REQUESTS),
        "--no-progress",
        "--out",
        str(out),
    ]
    began = time.monotonic()
    env = {**os.environ, "WAI_API_KEY": server.api_key}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=DURATION_S + 150)
    took = time.monotonic() - began
    report = json.loads((out / "report.json").read_text())
    soak = report["soak"]
    assert done.returncode == 0 and soak["passed"], (soak["verdicts"], done.stdout[-2000:], done.stderr[-2000:])
    assert {v["name"]: v["passed"] for v in soak["verdicts"]} == {"errors": True, "drained": True, "memory": True}
    assert DURATION_S <= took < DURATION_S + 60

    # Errors: none, and enough of both kinds of request for the soak to mean something.
    requests = soak["requests"]
    assert requests["failed"] == 0 and requests["errors"] == {}
    assert requests["completed"] >= 30 and requests["cancelled"] >= 2, requests
    # Every request the seed picked was left at its point, unless its reply ended before it; no other was.
    for r in report["requests"]:
        if r["cancel_after"] is None:
            assert r["ok"] and not r["cancelled"], r
        elif not r["cancelled"]:
            assert r["ok"] and len(r["itl"]) + 1 < r["cancel_after"], r
        else:
            assert len(r["itl"]) + (r["ttft"] is not None) == r["cancel_after"], r
    # Drained: vLLM's own gauges read 0 after the load.
    assert soak["drain"]["running"] == 0 and soak["drain"]["waiting"] == 0
    # Memory: the server and its children (the engine cores), sampled through the whole run.
    memory = soak["memory"]
    assert memory["pid"] == server.process.pid and memory["end"]["processes"] >= 2
    assert memory["baseline"]["rss_mib"] > 500 and memory["baseline"]["t_s"] >= RSS_WARMUP_S
    assert memory["end"]["t_s"] >= DURATION_S and abs(memory["growth_pct"]) < 10
    assert len(memory["samples"]) >= 10  # one every 2 s after the warm-up: about 14

    # The server saw the same run: every request counted once, the cancelled streams as clients that
    # left after their 200 (3008), save those whose last events were already sent when the client left.
    wait_for(lambda: scrape(server).value("wai_requests_in_flight") == 0, "the soak's requests to be counted")
    delta = scrape(server) - before
    assert delta.value("wai_requests_total") == requests["requests"] + WARMUP_REQUESTS
    assert delta.value("wai_requests_total", status="200") == requests["requests"] + WARMUP_REQUESTS
    left = delta.value("wai_requests_total", code="3008")
    assert max(1, requests["cancelled"] // 2) <= left <= requests["cancelled"], (left, requests)
    assert "## Soak: PASSED" in (out / "report.md").read_text()
