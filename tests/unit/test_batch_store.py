"""The batch store's state machine and its exactly-once rule, on a real SQLite file (no server)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from server.batch.store import BatchStore, BatchStoreUnusable, NewItem


def items(count: int) -> list[NewItem]:
    return [NewItem(f'{{"prompt": "item {index}"}}', f'"ref-{index}"') for index in range(count)]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "batch.sqlite3"


@pytest.fixture
def store(path: Path):
    opened = BatchStore.open(path)
    yield opened
    opened.close()


def test_items_run_in_submission_order_and_the_job_follows_its_items(store):
    assert store.submit("a", "m", items(2), now=1.0, max_jobs=10)
    assert store.submit("b", "m", items(1), now=2.0, max_jobs=10)
    assert store.job("a").status == "queued"
    claims = [store.claim() for _ in range(3)]
    assert [(claim.job, claim.index, claim.attempts) for claim in claims] == [("a", 0, 1), ("a", 1, 1), ("b", 0, 1)]
    assert (
        claims[0].model == "m"
        and claims[0].input == '{"prompt": "item 0"}'
        and claims[0].external_reference == '"ref-0"'
    )
    assert store.claim() is None
    assert store.job("a").status == "running"
    assert store.complete(claims[1], '"second"', now=5.0)
    assert store.job("a").status == "running" and store.job("a").done_items == 1
    assert store.responses("a") == [None, '"second"']
    assert store.complete(claims[0], '"first"', now=6.0)
    assert store.job("a").status == "done"
    assert store.responses("a") == ['"first"', '"second"']
    assert store.job_counts() == {"queued": 0, "running": 1, "done": 1}


def test_an_item_is_recorded_once_whatever_completes_it_again(store):
    store.submit("a", "m", items(1), now=1.0, max_jobs=10)
    first = store.claim()
    assert store.complete(first, '"answer"', now=2.0)
    assert not store.complete(first, '"again"', now=3.0)
    assert not store.requeue(first)  # done stays done
    assert store.claim() is None
    assert store.responses("a") == ['"answer"']
    assert [(item.state, item.attempts, item.completions) for item in store.item_states("a")] == [("done", 1, 1)]


def test_a_requeued_item_runs_again_and_only_its_latest_attempt_may_record(store):
    store.submit("a", "m", items(1), now=1.0, max_jobs=10)
    first = store.claim()
    assert store.requeue(first)
    assert not store.requeue(first)  # already back in the queue
    second = store.claim()
    assert second.attempts == 2
    assert not store.complete(first, '"stale"', now=2.0)  # the interrupted attempt finished late
    assert store.complete(second, '"fresh"', now=3.0)
    assert store.responses("a") == ['"fresh"']
    assert [(item.state, item.attempts, item.completions) for item in store.item_states("a")] == [("done", 2, 1)]


def test_opening_queues_again_what_a_killed_process_left_running(path):
    killed = BatchStore.open(path)
    killed.submit("a", "m", items(3), now=1.0, max_jobs=10)
    done, running = killed.claim(), killed.claim()
    killed.complete(done, '"kept"', now=2.0)
    killed.close()  # as a kill leaves it: item 1 running, item 2 queued
    restarted = BatchStore.open(path)
    assert [item.state for item in restarted.item_states("a")] == ["done", "queued", "queued"]
    again = restarted.claim()
    assert (again.index, again.attempts, again.orphaned) == (1, 2, 1)
    assert not restarted.complete(running, '"from the dead"', now=3.0)
    assert restarted.complete(again, '"rerun"', now=4.0)
    last = restarted.claim()
    assert (last.index, last.attempts, last.orphaned) == (2, 1, 0)  # it was only waiting
    assert restarted.complete(last, '"last"', now=5.0)
    assert restarted.responses("a") == ['"kept"', '"rerun"', '"last"']
    assert [item.completions for item in restarted.item_states("a")] == [1, 1, 1]
    assert restarted.job("a").status == "done"
    restarted.close()


def test_a_full_store_refuses_a_job_and_keeps_nothing_of_it(store):
    assert store.submit("a", "m", items(1), now=1.0, max_jobs=1)
    assert not store.submit("b", "m", items(1), now=1.0, max_jobs=1)
    assert store.job("b") is None
    assert store.claim().job == "a" and store.claim() is None


def test_finished_jobs_expire_with_their_items_and_unfinished_ones_never(store, path):
    store.submit("done", "m", items(1), now=1.0, max_jobs=10)
    store.submit("waiting", "m", items(1), now=1.0, max_jobs=10)
    store.complete(store.claim(), '"x"', now=10.0)
    assert store.expire(finished_before=10.0) == 0  # finished exactly then: still kept
    assert store.expire(finished_before=10.5) == 1
    assert store.job("done") is None and store.job("waiting") is not None
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM items WHERE job = 'done'").fetchone() == (0,)
    assert store.expire(finished_before=1e12) == 0  # the queued one stays however old
    assert store.submit("next", "m", items(1), now=11.0, max_jobs=2)


def test_a_database_it_cannot_use_is_a_clear_error(tmp_path, path):
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(BatchStoreUnusable, match="schema version 99"):
        BatchStore.open(path)
    (tmp_path / "file").write_text("")
    with pytest.raises(BatchStoreUnusable, match="cannot open the batch database"):
        BatchStore.open(tmp_path / "file" / "batch.sqlite3")
