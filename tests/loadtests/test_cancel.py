"""Cancellations (--cancel-rate): which requests are dropped and where, that the connection is really
dropped, and that they are reported as cancelled, never as errors.

The target is a tiny local HTTP server streaming Workers AI events slowly, which notes whether the
client went away before the end of its stream.
"""

import asyncio
import json
import time
from collections import Counter

import pytest

from loadtests.cli import main
from loadtests.client import RequestRecord, http_client, send
from loadtests.prompts import Prompt
from loadtests.protocols import Sampling, Target
from loadtests.runner import Cancellation
from loadtests.stats import summarize
from tests.support.http_target import CannedHandler

TOKENS = 20


class SlowStream(CannedHandler):
    """Streams TOKENS one-token events 10 ms apart, then usage and [DONE]; a prompt saying "fail"
    gets a 429. Records, per request, whether the client left before the end."""

    outcomes: list[str] = []

    def do_POST(self):
        body = json.loads(self.read_body())
        if body["messages"][-1]["content"] == "fail":
            error = json.dumps({"success": False, "errors": [{"code": 3040, "message": "busy"}]}).encode()
            self.answer(429, error, "application/json")
            return
        self.start_chunks(200, "text/event-stream")
        usage = {"prompt_tokens": 3, "completion_tokens": TOKENS, "total_tokens": TOKENS + 3}
        events = [{"response": f"t{i} "} for i in range(TOKENS)] + [{"response": "", "usage": usage}]
        try:
            for event in [*events, "[DONE]"]:
                self.chunk(
                    b"data: " + (event.encode() if isinstance(event, str) else json.dumps(event).encode()) + b"\n\n"
                )
                time.sleep(0.01)
            self.chunk(b"")
        except (BrokenPipeError, ConnectionResetError):
            SlowStream.outcomes.append("client left")
            return
        SlowStream.outcomes.append("finished")


@pytest.fixture
def slow_target(http_target):
    SlowStream.outcomes = []
    return http_target(SlowStream)


def wait_for_outcomes(count: int, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(SlowStream.outcomes) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return SlowStream.outcomes


def one(url: str, cancel_after: int | None, content: str = "hello", max_tokens: int = TOKENS) -> RequestRecord:
    async def go() -> RequestRecord:
        async with http_client(1, 30) as client:
            prompt = Prompt("p", [{"role": "user", "content": content}], max_tokens)
            return await send(client, Target("A", url, "workers-ai", "m"), prompt, Sampling(), 1, 0.0, cancel_after)

    return asyncio.run(go())


# ---------------------------------------------------------------- which requests, and where


def test_the_share_of_cancelled_requests_is_the_rate_and_every_point_can_be_drawn():
    cancel = Cancellation(0.2, seed=3, key="4:0")
    points = [cancel.after(i, 32) for i in range(20000)]
    chosen = [p for p in points if p is not None]
    assert len(chosen) / len(points) == pytest.approx(0.2, abs=0.01)
    counts = Counter(chosen)
    assert set(counts) == set(range(32))  # 0 (right after the headers) to 31 (before the last token)
    assert max(counts.values()) < 2 * min(counts.values())  # uniform, not bunched


def test_the_same_seed_cancels_the_same_requests_at_the_same_points():
    first = [Cancellation(0.3, 7, "1:0").after(i, 16) for i in range(200)]
    assert first == [Cancellation(0.3, 7, "1:0").after(i, 16) for i in range(200)]
    assert first != [Cancellation(0.3, 8, "1:0").after(i, 16) for i in range(200)]
    assert first != [Cancellation(0.3, 7, "1:1").after(i, 16) for i in range(200)]  # another round


def test_no_rate_cancels_nothing_and_a_one_token_reply_is_cancelled_at_its_headers():
    assert all(Cancellation(0.0, 1, "k").after(i, 32) is None for i in range(1000))
    points = {Cancellation(0.5, 1, "k").after(i, 1) for i in range(100)}
    assert points == {None, 0}


# ---------------------------------------------------------------- one request


def test_a_cancelled_request_drops_the_connection_and_is_not_an_error(slow_target):
    record = one(slow_target, cancel_after=3)
    assert record.cancelled and not record.ok and record.error_code is None
    assert record.cancel_after == 3 and record.ttft is not None and len(record.itl) == 2
    assert wait_for_outcomes(1) == ["client left"]  # the server saw the client go mid-stream


def test_cancelling_at_zero_leaves_right_after_the_headers(slow_target):
    record = one(slow_target, cancel_after=0)
    assert record.cancelled and record.status == 200 and record.ttft is None
    assert wait_for_outcomes(1) == ["client left"]


def test_a_reply_shorter_than_the_cancel_point_completes(slow_target):
    record = one(slow_target, cancel_after=TOKENS + 5)
    assert record.ok and not record.cancelled and record.output_tokens == TOKENS
    assert wait_for_outcomes(1) == ["finished"]


def test_an_error_before_the_cancel_point_is_still_an_error(slow_target):
    record = one(slow_target, cancel_after=0, content="fail")
    assert not record.ok and not record.cancelled and record.error_code == "429:3040"


# ---------------------------------------------------------------- the run and its report


def test_cancelled_requests_are_counted_apart_from_completed_and_failed():
    records = [
        RequestRecord("A", 1, "p1", 0.0, ok=True, ttft=0.1, last_token=0.3, e2e=0.4, output_tokens=3),
        RequestRecord("A", 1, "p2", 0.0, cancelled=True, cancel_after=1, ttft=5.0, e2e=5.0),
        RequestRecord("A", 1, "p3", 0.0, error_code="500", e2e=0.1),
    ]
    s = summarize(records, duration_s=1.0)
    assert (s["requests"], s["completed"], s["cancelled"], s["failed"]) == (3, 1, 1, 1)
    assert s["errors"] == {"500": 1}
    assert s["ttft_ms"]["count"] == 1 and s["ttft_ms"]["p99"] == pytest.approx(100)  # not the cancelled 5 s
    assert s["output_tokens"] == 3


def test_a_run_with_a_cancel_rate_reports_cancellations_not_errors(slow_target, tmp_path):
    code = main(
        [
            "--url",
            slow_target,
            "--concurrency",
            "4",
            "--num-requests",
            "40",
            "--output-tokens",
            str(TOKENS),
            "--cancel-rate",
            "0.5",
            "--seed",
            "1",
            "--warmup",
            "0",
            "--no-progress",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    report = json.loads((tmp_path / "report.json").read_text())
    summary = report["levels"][0]["summaries"]["A"]
    planned = [r for r in report["requests"] if r["cancel_after"] is not None]
    assert 10 <= len(planned) <= 30  # about half of 40
    assert summary["cancelled"] == len(planned) and all(r["cancelled"] for r in planned)
    assert summary["completed"] == 40 - len(planned) and summary["failed"] == 0 and summary["errors"] == {}
    # The same points as the seed draws, independently of the order the requests ran in.
    cancel = Cancellation(0.5, 1, "4:0")
    assert sorted(r["cancel_after"] for r in planned) == sorted(
        p for p in (cancel.after(i, TOKENS) for i in range(40)) if p is not None
    )
    outcomes = Counter(wait_for_outcomes(40))
    assert outcomes == {"client left": len(planned), "finished": 40 - len(planned)}
    markdown = (tmp_path / "report.md").read_text()
    assert f"| 4 | A | {40 - len(planned)} | 0 | {len(planned)} |" in markdown


def test_cancel_rate_must_be_a_share_below_one(capsys):
    for bad in ("1", "-0.1", "often"):
        with pytest.raises(SystemExit):
            main(["--url", "http://127.0.0.1:9", "--cancel-rate", bad])
    assert "--cancel-rate" in capsys.readouterr().err
