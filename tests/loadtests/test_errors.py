"""A target that answers errors is reported, not crashed on.

The target here is a tiny local HTTP server with canned answers: it tests the load tool itself,
not wai, so it answers every way a server can fail, in turn.
"""

import json
from itertools import count

import pytest

from loadtests.cli import main
from tests.support.http_target import CannedHandler

ENVELOPE_429 = {
    "result": {},
    "success": False,
    "errors": [{"code": 3040, "message": "Capacity temporarily exceeded, please try again."}],
    "messages": [],
}
STREAM_FAILURE = {
    "response": "",
    "result": {},
    "success": False,
    "errors": [{"code": 3007, "message": "Request timeout"}],
    "messages": [],
}


def sse(*events) -> bytes:
    return b"".join(b"data: " + (e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n\n" for e in events)


GOOD = sse(
    {"response": "Hel", "p": "xy"},
    {"response": "lo"},
    {"response": ""},
    {"response": "", "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}},
    b"[DONE]",
)
# Each answer in turn: (status, content type, body).
ANSWERS = [
    (200, "text/event-stream", GOOD),
    (429, "application/json", json.dumps(ENVELOPE_429).encode()),
    (500, "text/html", b"<html>Internal Server Error</html>"),
    (200, "text/event-stream", sse({"response": "Hi"}, STREAM_FAILURE, b"[DONE]")),
    (200, "text/event-stream", sse({"response": "Hi"})),  # cut off: no [DONE]
]


class CannedTarget(CannedHandler):
    turn = count()

    def do_POST(self):
        self.read_body()
        status, content_type, body = ANSWERS[next(self.turn) % len(ANSWERS)]
        self.answer(status, body, content_type)


@pytest.fixture
def canned_target(http_target):
    return http_target(CannedTarget)


def test_errors_of_every_kind_are_counted_by_code(canned_target, tmp_path):
    CannedTarget.turn = count()
    closed_port = "http://127.0.0.1:9"  # discard port: nothing listens on loopback
    code = main(
        [
            "--url",
            canned_target,
            "--url",
            closed_port,
            "--label",
            "canned",
            "--label",
            "down",
            "--protocol",
            "workers-ai",
            "--concurrency",
            "1",
            "--num-requests",
            "10",
            "--warmup",
            "0",
            "--rounds",
            "1",
            "--no-progress",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    report = json.loads((tmp_path / "report.json").read_text())
    canned = report["levels"][0]["summaries"]["canned"]
    assert canned["completed"] == 2 and canned["failed"] == 8
    assert canned["errors"] == {"429:3040": 2, "500": 2, "stream:3007": 2, "truncated": 2}
    assert canned["output_tokens"] == 4 and canned["prompt_tokens"] == 14
    down = report["levels"][0]["summaries"]["down"]
    assert down["completed"] == 0 and down["errors"] == {"connect_error": 10}
    assert report["levels"][0]["ratios"]["down"]["output_throughput"] == 0.0
    messages = {r["error_code"]: r["error"] for r in report["requests"] if not r["ok"]}
    assert messages["429:3040"] == "Capacity temporarily exceeded, please try again."
    assert "Errors by code" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "throughput.png").stat().st_size > 0
