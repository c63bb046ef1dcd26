"""A batch job outlives its server: killed (SIGKILL) while items run, the server restarts on the same
database and the job finishes with every item answered exactly once. A stop (SIGTERM) puts the items in
flight back in the queue: tests/pipeline/test_batch.py, on the same store and runner."""

from __future__ import annotations

import contextlib
import sqlite3
from collections import Counter
from pathlib import Path

import httpx
import psutil

from tests.support.servers import RunningServer, start_server, text_only_config
from tests.support.waiting import wait_for

ITEMS = 6
COUNTING = {"messages": [{"role": "user", "content": "Count from 1 to 300, separated by commas."}], "max_tokens": 24}


def items(db: Path, job: str) -> list[tuple[str, int, int]]:
    """Each item's (state, attempts, completions), read from the database as it is on disk."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as connection:
        rows = connection.execute("SELECT state, attempts, completions FROM items WHERE job = ? ORDER BY idx", (job,))
        return list(rows)


def states(db: Path, job: str) -> Counter[str]:
    return Counter(state for state, _, _ in items(db, job))


def poll(server: RunningServer, job: str) -> dict:
    response = httpx.post(server.run_url(), json={"request_id": job}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["result"]


def test_a_job_survives_a_kill_and_each_item_completes_once(tmp_path):
    db = tmp_path / "batch.sqlite3"
    config = text_only_config(
        tmp_path, model={"lora": {"enabled": False}}, batch={"db_path": str(db), "concurrency": 2, "max_jobs": 2}
    )
    logs: list[dict] = []

    first = start_server("batch-restart-1", config=config)
    try:
        requests = [{**COUNTING, "seed": index + 1, "external_reference": f"item-{index}"} for index in range(ITEMS)]
        queued = httpx.post(first.run_url(), params={"queueRequest": "true"}, json={"requests": requests}, timeout=60)
        assert queued.status_code == 200, queued.text
        job = queued.json()["result"]["request_id"]
        wait_for(lambda: states(db, job)["done"] >= 1 and states(db, job)["running"] >= 1, "one done, one running")
        engine = psutil.Process(first.process.pid).children(recursive=True)
        first.process.kill()  # no drain, no cleanup: items stay `running` in the file
        first.process.wait()
        for orphan in engine:  # a container takes them down with the server; here the test does
            with contextlib.suppress(psutil.NoSuchProcess):
                orphan.kill()
    finally:
        first.stop()
    logs += first.request_log()
    assert states(db, job)["running"] >= 1

    second = start_server("batch-restart-2", config=config)
    try:
        wait_for(lambda: poll(second, job)["status"] == "done", "the job is done", timeout=600)
        done = poll(second, job)
        assert [(r["id"], r["external_reference"], r["success"]) for r in done["responses"]] == [
            (index, f"item-{index}", True) for index in range(ITEMS)
        ]
        assert all(r["result"]["usage"]["completion_tokens"] >= 1 for r in done["responses"])
        # The jobs kept are bounded: this one and one more, then 429 until one expires.
        more = {"requests": [{"prompt": "Hi", "max_tokens": 2}]}
        assert httpx.post(second.run_url(), params={"queueRequest": "true"}, json=more, timeout=60).status_code == 200
        full = httpx.post(second.run_url(), params={"queueRequest": "true"}, json=more, timeout=60)
        assert full.status_code == 429 and full.json()["errors"][0]["code"] == 3046
        logs += second.request_log()
    finally:
        second.stop()

    final = items(db, job)
    assert [(state, completions) for state, _, completions in final] == [("done", 1)] * ITEMS
    assert sum(attempts for _, attempts, _ in final) > ITEMS  # the items the kill cut ran again
    # Every item's answer was logged at most once over both servers (the kill may cut a line), by the
    # attempt the database kept.
    answered = [line for line in logs if line.get("batch") == job and line["outcome"] == "success"]
    assert len({line["item"] for line in answered}) == len(answered) >= ITEMS - 1
    assert all(line["attempt"] == final[line["item"]][1] for line in answered)
