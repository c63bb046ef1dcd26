"""The shared database's batch store on a real Postgres (no server): the SQLite store's exactly-once rule,
claims that never take the same item however many replicas claim at once, and leases: one that ran out
is taken over, counted orphaned, and its old holder can neither renew nor record it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg

from server.stores.batch import NewItem, PostgresBatchStore
from server.stores.postgres import Database

T = TypeVar("T")


def items(count: int) -> list[NewItem]:
    return [NewItem(f'{{"prompt": "item {index}"}}', f'"ref-{index}"') for index in range(count)]


def with_replicas(url: str, work: Callable[..., Awaitable[T]], count: int = 2) -> T:
    """`work(*stores)`: `count` replicas' stores on one database, each with its own pool."""

    async def run() -> T:
        databases = [Database(url, timeout_s=5) for _ in range(count)]
        for database in databases:
            await database.open()
        try:
            return await work(*[PostgresBatchStore(db, f"replica-{n}", lease_s=30) for n, db in enumerate(databases)])
        finally:
            for database in databases:
                await database.close()

    return asyncio.run(run())


def end_lease(url: str, job: str, index: int) -> None:
    """The item's lease runs out now, as it does when its replica stops renewing it."""
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(
            "UPDATE wai_batch_items SET lease_until = now() - interval '1 second' WHERE job = %s AND idx = %s",
            (job, index),
        )


def test_items_run_in_order_and_each_is_recorded_once(postgres):
    async def work(store: PostgresBatchStore) -> None:
        assert await store.submit("a", "m", items(2), now=1.0, max_jobs=10)
        first, second = await store.claim(), await store.claim()
        assert first is not None and second is not None and await store.claim() is None
        assert (first.index, first.attempts, first.model, first.external_reference) == (0, 1, "m", '"ref-0"')
        assert (await store.job("a")).status == "running"  # type: ignore[union-attr]
        assert await store.requeue(second) and not await store.requeue(second)
        again = await store.claim()
        assert again is not None and (again.index, again.attempts) == (1, 2)
        assert not await store.complete(second, '"stale"', now=2.0)
        assert await store.complete(first, '"one"', now=3.0) and not await store.complete(first, '"twice"', now=3.0)
        assert await store.complete(again, '"two"', now=4.0)
        assert await store.responses("a") == ['"one"', '"two"']
        assert [(i.state, i.attempts, i.completions) for i in await store.item_states("a")] == [
            ("done", 1, 1),
            ("done", 2, 1),
        ]
        assert await store.job_counts() == {"queued": 0, "running": 0, "done": 1}
        assert await store.expire(finished_before=4.0) == 0 and await store.expire(finished_before=4.5) == 1
        assert await store.job("a") is None

    with_replicas(postgres.new_database(), work, count=1)


def test_replicas_claiming_at_once_never_take_the_same_item_nor_keep_more_than_max_jobs(postgres):
    async def work(one: PostgresBatchStore, other: PostgresBatchStore) -> None:
        submitted = await asyncio.gather(
            *[s.submit(f"job-{n}", "m", items(5), 1.0, 3) for n, s in enumerate([one, other] * 3)]
        )
        assert sorted(submitted) == [False] * 3 + [True] * 3
        claims = await asyncio.gather(*[store.claim() for store in [one, other] * 8])
        taken = [claim.seq for claim in claims if claim is not None]
        assert len(taken) == 15 and len(set(taken)) == 15

    with_replicas(postgres.new_database(), work)


def test_a_lease_that_ran_out_is_taken_over_and_its_old_holder_can_neither_renew_nor_record(postgres):
    url = postgres.new_database()

    async def work(dead: PostgresBatchStore, alive: PostgresBatchStore) -> None:
        await dead.submit("a", "m", items(2), now=1.0, max_jobs=10)
        lost, kept = await dead.claim(), await dead.claim()
        assert lost is not None and kept is not None
        assert await alive.claim() is None  # both leases run
        await asyncio.to_thread(end_lease, url, "a", 0)
        taken = await alive.claim()
        assert taken is not None and (taken.index, taken.attempts, taken.orphaned) == (0, 2, 1)
        await dead.renew([lost, kept])  # too late for the first
        await asyncio.to_thread(end_lease, url, "a", 1)
        await dead.renew([kept])  # ran out, but nobody took it: renewed, it is still its own
        assert await alive.claim() is None
        assert not await dead.complete(lost, '"late"', now=2.0)
        assert await alive.complete(taken, '"rerun"', now=3.0) and await dead.complete(kept, '"kept"', now=3.0)
        assert await alive.responses("a") == ['"rerun"', '"kept"']

    with_replicas(url, work)
