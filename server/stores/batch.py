"""The async batch API's jobs in the shared database (`database_url`), for every replica.

Every replica takes jobs, answers polls and runs items. The states and the exactly-once rule are the
SQLite store's (server/batch/store.py): an item's result is written in the transaction that marks it
done, only by the claim that holds it (its `seq` and `attempts`), and `completions` counts recorded
results. What differs is how a replica that died gives its items back: it cannot, so each claim is a
lease. A claim takes the oldest item that is queued, or running under a lease that ran out (counting it
`orphaned`), skipping rows another replica is claiming at the same moment; it sets `owner` and
`lease_until` by the database's clock, so that the replicas' clocks need not agree. The runner renews
its items' leases while they run (`renew`); a replica that stops renewing (killed, cut off) loses its
items to the others once `cluster.lease_s` has passed, and its late answers change nothing.

Every call goes through `Database.connection`: an unreachable database is 503 / 3048 "The batch jobs
store is unavailable", and nothing was accepted. Job times (`created`, `finished`) are the wall-clock
seconds the caller gives, as in SQLite; leases are the database's.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.stores.postgres import Database

WHAT = "batch jobs"  # the store's name in its 503
# Submissions take turns under this transaction lock, so that replicas submitting at once cannot
# together keep more than max_jobs: "wai" and "b" in ASCII.
SUBMIT_LOCK = 0x77616962


@dataclass(frozen=True)
class NewItem:
    input: str  # JSON
    external_reference: str  # JSON


@dataclass(frozen=True)
class Claim:
    """One attempt at one item: the right to record its result while the item stays in its hands."""

    seq: int
    job: str
    model: str
    index: int
    input: str
    external_reference: str
    attempts: int  # including this one
    orphaned: int  # times a process died while running it


@dataclass(frozen=True)
class Job:
    id: str
    model: str
    status: str
    items: int
    done_items: int


@dataclass(frozen=True)
class ItemState:
    index: int
    state: str
    attempts: int
    completions: int


# The oldest item to run: queued, or running under a lease that ran out (its owner stopped renewing).
# SKIP LOCKED: a row another replica is claiming now is left to it rather than waited for.
CLAIM = """
WITH next AS (
    SELECT seq FROM wai_batch_items
    WHERE state = 'queued' OR (state = 'running' AND lease_until < now())
    ORDER BY seq LIMIT 1
    FOR UPDATE SKIP LOCKED
)
UPDATE wai_batch_items AS item
SET state = 'running',
    attempts = item.attempts + 1,
    orphaned = item.orphaned + CASE WHEN item.state = 'running' THEN 1 ELSE 0 END,
    owner = %(owner)s,
    lease_until = now() + make_interval(secs => %(lease_s)s)
FROM next
WHERE item.seq = next.seq
RETURNING item.seq, item.job, item.idx, item.input, item.external_reference, item.attempts, item.orphaned
"""

RENEW = """
UPDATE wai_batch_items SET lease_until = now() + make_interval(secs => %(lease_s)s)
WHERE state = 'running' AND owner = %(owner)s
  AND (seq, attempts) IN (SELECT * FROM unnest(%(seqs)s::bigint[], %(attempts)s::integer[]))
"""


class PostgresBatchStore:
    def __init__(self, database: Database, owner: str, lease_s: float):
        """`owner`: this replica's name on the items it runs; `lease_s`: how long a claim lasts unrenewed."""
        self.database, self.owner, self.lease_s = database, owner, lease_s

    # --- jobs ---------------------------------------------------------------------------------
    async def submit(self, job_id: str, model: str, items: list[NewItem], now: float, max_jobs: int) -> bool:
        """Keep a new job with its items queued; False (and nothing kept) when `max_jobs` are kept already."""
        async with self.database.connection(WHAT, "submit") as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SUBMIT_LOCK,))
            row = await (await conn.execute("SELECT count(*) FROM wai_batch_jobs")).fetchone()
            if row is None or row[0] >= max_jobs:
                return False
            await conn.execute(
                "INSERT INTO wai_batch_jobs (id, model, items, created) VALUES (%s, %s, %s, %s)",
                (job_id, model, len(items), now),
            )
            await conn.execute(
                "INSERT INTO wai_batch_items (job, idx, input, external_reference)"
                " SELECT %s, idx - 1, input, reference"
                " FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS given (input, reference, idx)"
                " ORDER BY idx",
                (job_id, [item.input for item in items], [item.external_reference for item in items]),
            )
        return True

    async def job(self, job_id: str) -> Job | None:
        async with self.database.connection(WHAT, "poll") as conn:
            cursor = await conn.execute(
                "SELECT id, model, status, items, done_items FROM wai_batch_jobs WHERE id = %s", (job_id,)
            )
            row = await cursor.fetchone()
        return None if row is None else Job(*row)

    async def responses(self, job_id: str) -> list[str | None]:
        """Each item's answer (JSON), in the job's order; None for an item not done."""
        async with self.database.connection(WHAT, "poll") as conn:
            cursor = await conn.execute("SELECT response FROM wai_batch_items WHERE job = %s ORDER BY idx", (job_id,))
            return [response for (response,) in await cursor.fetchall()]

    async def item_states(self, job_id: str) -> list[ItemState]:
        async with self.database.connection(WHAT, "poll") as conn:
            cursor = await conn.execute(
                "SELECT idx, state, attempts, completions FROM wai_batch_items WHERE job = %s ORDER BY idx", (job_id,)
            )
            return [ItemState(*row) for row in await cursor.fetchall()]

    async def job_counts(self) -> dict[str, int]:
        """Jobs kept, by status (every replica's)."""
        counts = {"queued": 0, "running": 0, "done": 0}
        async with self.database.connection(WHAT, "count") as conn:
            cursor = await conn.execute("SELECT status, count(*) FROM wai_batch_jobs GROUP BY status")
            counts.update({status: count for status, count in await cursor.fetchall()})
        return counts

    async def expire(self, finished_before: float) -> int:
        """Forget jobs whose last item was done before `finished_before`, results and all; how many."""
        async with self.database.connection(WHAT, "expire") as conn:
            cursor = await conn.execute(
                "DELETE FROM wai_batch_jobs WHERE status = 'done' AND finished < %s", (finished_before,)
            )
            return cursor.rowcount

    # --- items --------------------------------------------------------------------------------
    async def claim(self) -> Claim | None:
        """The oldest item to run, now this replica's under a new attempt number and a fresh lease;
        None when there is none."""
        async with self.database.connection(WHAT, "claim") as conn, conn.transaction():
            cursor = await conn.execute(CLAIM, {"owner": self.owner, "lease_s": self.lease_s})
            row = await cursor.fetchone()
            if row is None:
                return None
            seq, job, index, input_json, reference, attempts, orphaned = row
            cursor = await conn.execute(
                "UPDATE wai_batch_jobs SET status = CASE WHEN status = 'queued' THEN 'running' ELSE status END"
                " WHERE id = %s RETURNING model",
                (job,),
            )
            (model,) = await cursor.fetchone()  # type: ignore[misc]  # its job is there: a foreign key
        return Claim(seq, job, model, index, input_json, reference, attempts, orphaned)

    async def complete(self, claim: Claim, response: str, now: float) -> bool:
        """Record the item's answer if `claim` still holds the item; True when recorded (once per item)."""
        async with self.database.connection(WHAT, "complete") as conn, conn.transaction():
            cursor = await conn.execute(
                "UPDATE wai_batch_items SET state = 'done', response = %s, completions = completions + 1,"
                " owner = NULL, lease_until = NULL"
                " WHERE seq = %s AND state = 'running' AND attempts = %s",
                (response, claim.seq, claim.attempts),
            )
            recorded = cursor.rowcount
            if recorded:
                await conn.execute(
                    "UPDATE wai_batch_jobs SET done_items = done_items + 1,"
                    " status = CASE WHEN done_items + 1 = items THEN 'done' ELSE status END,"
                    " finished = CASE WHEN done_items + 1 = items THEN %s ELSE finished END"
                    " WHERE id = %s",
                    (now, claim.job),
                )
        return bool(recorded)

    async def requeue(self, claim: Claim) -> bool:
        """Put the item back in the queue if `claim` still holds it (to run again under a new attempt)."""
        async with self.database.connection(WHAT, "requeue") as conn:
            cursor = await conn.execute(
                "UPDATE wai_batch_items SET state = 'queued', owner = NULL, lease_until = NULL"
                " WHERE seq = %s AND state = 'running' AND attempts = %s",
                (claim.seq, claim.attempts),
            )
            return bool(cursor.rowcount)

    async def renew(self, claims: list[Claim]) -> None:
        """Extend the leases of the items this replica runs, in one statement. A claim another replica
        took over meanwhile (its lease had run out) is not renewed: its answer will not be recorded."""
        if not claims:
            return
        parameters = {
            "lease_s": self.lease_s,
            "owner": self.owner,
            "seqs": [claim.seq for claim in claims],
            "attempts": [claim.attempts for claim in claims],
        }
        async with self.database.connection(WHAT, "renew") as conn:
            await conn.execute(RENEW, parameters)

    async def close(self) -> None:
        """Nothing of its own: the database closes with the app's shared stores."""
