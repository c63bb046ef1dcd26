"""The async batch API with `database_url`: replicas (apps on the fakes) sharing one Postgres database
take each other's jobs and run their items, each recorded once; a replica that stops renewing its
leases loses its items to the others; Postgres down answers 503 / 3048, an answer that comes
meanwhile waits to be recorded, and the queued items finish by themselves once it is back (also in a
replica started while it was down). The SQLite store's own rules: test_batch.py and unit/test_batch_store.py."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import psycopg

from server.config import Settings
from server.stores.batch import Claim, NewItem, PostgresBatchStore
from server.stores.postgres import Database
from tests.pipeline.requests import run
from tests.pipeline.test_batch import poll, submit, submitted, until_done
from tests.support.envelopes import result, workers_ai_error
from tests.support.fakes import TEXT_MODEL, fake_settings
from tests.support.metrics import scrape
from tests.support.servers import serve_app
from tests.support.stores import postgres_server, until_refused
from tests.support.waiting import wait_for

LEASE_S = 1
DONE_ONCE = ("done", 1, 0, 1)  # state, attempts, orphaned, completions: run once, recorded once


def shared_settings(root: Path, database_url: str, **overrides: Any) -> Settings:
    """A replica on the fakes: one item at a time, short leases, and a store that counts as down after 1 s."""
    cluster = {"lease_s": LEASE_S, "store_timeout_s": 1}
    return fake_settings(root, database_url=database_url, cluster=cluster, batch={"concurrency": 1}, **overrides)


def item_rows(database_url: str, job: str) -> list[tuple[str, int, int, int]]:
    with psycopg.connect(database_url) as connection:
        rows = connection.execute(
            "SELECT state, attempts, orphaned, completions FROM wai_batch_items WHERE job = %s ORDER BY idx", (job,)
        )
        return list(rows)


def test_two_replicas_share_jobs_and_every_item_is_done_once(postgres, tmp_path):
    url = postgres.new_database()
    with (
        serve_app(shared_settings(tmp_path / "a", url)) as a,
        serve_app(shared_settings(tmp_path / "b", url)) as b,
        a.client() as through_a,
        b.client() as through_b,
    ):
        # A takes the first item at once and holds it for 3 s, three leases, renewing it: B, looking
        # for work every second, runs the others, and never the one A holds.
        a.text_engine.delay = 0.5
        request_id = submitted(through_a, [{"prompt": f"item {index}"} for index in range(4)])
        done = until_done(through_b, request_id, timeout=30)
        assert [response["success"] for response in done["responses"]] == [True] * 4
        assert result(poll(through_a, request_id)) == done
        ran_by_a, ran_by_b = a.text_engine.requests, b.text_engine.requests
    assert ran_by_a and ran_by_b
    assert sorted(ran_by_a + ran_by_b) == [f"batch-{request_id}-{index}-1" for index in range(4)]
    assert item_rows(url, request_id) == [DONE_ONCE] * 4


async def kept_job(database_url: str, job: str, items: int, claimed: int = 0) -> list[Claim]:
    """A job of `items` kept by another replica, which claimed the first `claimed` of them and then
    died: it never renews, never answers. The claims it held."""
    database = Database(database_url, timeout_s=2)
    await database.open()
    store = PostgresBatchStore(database, "dead-replica", lease_s=LEASE_S)
    new_items = [NewItem(f'{{"prompt": "item {index}"}}', "null") for index in range(items)]
    assert await store.submit(job, TEXT_MODEL, new_items, now=time.time(), max_jobs=10)
    claims = [await store.claim() for _ in range(claimed)]
    await database.close()
    return [claim for claim in claims if claim is not None]


async def late_answer(database_url: str, claim: Claim) -> bool:
    """The dead replica's answer, coming after all."""
    database = Database(database_url, timeout_s=2)
    await database.open()
    try:
        return await PostgresBatchStore(database, "dead-replica", LEASE_S).complete(claim, '"late"', now=time.time())
    finally:
        await database.close()


def test_a_replica_that_stops_renewing_loses_its_items_to_the_others_once_the_lease_ends(postgres, tmp_path):
    url = postgres.new_database()
    claims = asyncio.run(kept_job(url, "job", items=3, claimed=2))
    assert [(claim.index, claim.attempts) for claim in claims] == [(0, 1), (1, 1)]
    with serve_app(shared_settings(tmp_path, url)) as other, other.client() as client:
        done = until_done(client, "job", timeout=30)
        assert [response["success"] for response in done["responses"]] == [True] * 3
        assert sorted(other.text_engine.requests) == ["batch-job-0-2", "batch-job-1-2", "batch-job-2-1"]
    # The dead replica's items ran again, counted orphaned; its late answer changes nothing.
    assert item_rows(url, "job") == [("done", 2, 1, 1)] * 2 + [DONE_ONCE]
    assert not asyncio.run(late_answer(url, claims[0]))
    assert item_rows(url, "job") == [("done", 2, 1, 1)] * 2 + [DONE_ONCE]


def test_postgres_down_refuses_batch_calls_with_503_and_the_queued_items_finish_once_it_is_back(tmp_path):
    with postgres_server() as server:
        url = server.new_database()
        with serve_app(shared_settings(tmp_path, url)) as served, served.client() as client:
            engine = served.text_engine
            engine.delay = 0.5  # three seconds an item
            request_id = submitted(client, [{"prompt": f"item {index}"} for index in range(3)])
            first = f"batch-{request_id}-0-1"
            wait_for(lambda: first in engine.requests, "the first item to start", timeout=10, interval=0.02)
            server.stop()
            until_refused(url)
            refused = submit(client, [{"prompt": "while down"}])
            message = workers_ai_error(refused, 503, 3048)
            assert message == "The batch jobs store is unavailable, please try again."
            assert refused.headers["retry-after"] == "5"
            options = client.post(
                f"/client/v4/accounts/a/ai/run/{TEXT_MODEL}",
                json={"requests": [{"prompt": "x"}], "options": {"queueRequest": True}},
            )
            workers_ai_error(options, 503, 3048)
            workers_ai_error(poll(client, request_id), 503, 3048)
            assert result(run(client, {"prompt": "text still serves"}))["response"] == engine.text()
            # The first item's answer comes while the database is away: it waits to be recorded.
            wait_for(lambda: first in engine.finished, "the first item to finish", timeout=10, interval=0.02)
            server.start()
            wait_for(lambda: poll(client, request_id).status_code == 200, "the store to be back", timeout=60)
            done = until_done(client, request_id, timeout=60)
            assert [response["success"] for response in done["responses"]] == [True] * 3
        assert item_rows(url, request_id) == [DONE_ONCE] * 3


def test_a_replica_started_while_postgres_is_down_runs_the_queued_items_once_it_is_back(tmp_path):
    with postgres_server() as server:
        url = server.new_database()
        asyncio.run(kept_job(url, "job", items=2))
        server.stop()
        until_refused(url)
        with serve_app(shared_settings(tmp_path, url)) as served, served.client() as client:
            workers_ai_error(poll(client, "job"), 503, 3048)
            assert result(run(client, {"prompt": "text serves at once"}))["response"] == served.text_engine.text()
            wait_for(lambda: scrape(client).value("wai_store_failures_total", operation="claim") >= 2, "claims to fail")
            server.start()  # the runner, looking all along, finds the items once the schema is checked
            wait_for(lambda: poll(client, "job").status_code == 200, "the store to be back", timeout=60)
            done = until_done(client, "job", timeout=60)
            assert [response["success"] for response in done["responses"]] == [True] * 2
        assert item_rows(url, "job") == [DONE_ONCE] * 2
