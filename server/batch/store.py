"""The async batch API's jobs in an embedded SQLite database, so that they survive a restart.

A job is a row of `jobs`; each of its items a row of `items`, in a state:

    queued --claim--> running --complete--> done
                         `---requeue--> queued      (shutdown, a busy engine, a restart)

An item's result is written in the same transaction that marks it done, and only by the attempt
that holds it (`attempts` is the claim's number): a late or repeated completion changes nothing, so
every item is done exactly once however often it is interrupted. A process killed mid-item leaves
it `running`; opening the store puts every running item back in the queue (and counts it
`orphaned`, so that an item that keeps bringing the process down can be given up). `completions` counts
recorded results (0 or 1), the evidence of that rule.

One server per database file: two sharing one stay correct (each item is still recorded once), but
a server that starts requeues the other's items in flight, which then run twice. Replicas share jobs
through `database_url` instead (server/stores/batch.py: the same rules, with a lease on each claim).

The WAL journal with synchronous=NORMAL survives a crash of the process (a commit is in the log
before the call returns); a power loss may undo the last commits, whose items then run again.
Times are wall-clock seconds (they must mean the same after a restart).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from server.stores.batch import Claim, ItemState, Job, NewItem

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    model TEXT NOT NULL,                 -- as the client named it
    status TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'done')),
    items INTEGER NOT NULL,
    done_items INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    finished REAL                        -- when its last item was done; results expire from then
);
CREATE TABLE IF NOT EXISTS items (
    seq INTEGER PRIMARY KEY,             -- submission order: jobs first come, first served
    job TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    input TEXT NOT NULL,                 -- the request as JSON
    external_reference TEXT,             -- as JSON
    state TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'done')),
    attempts INTEGER NOT NULL DEFAULT 0,
    orphaned INTEGER NOT NULL DEFAULT 0, -- times a process stopped without putting it back (a crash)
    completions INTEGER NOT NULL DEFAULT 0,
    response TEXT,                       -- the item's answer as JSON, once done
    UNIQUE (job, idx)
);
CREATE INDEX IF NOT EXISTS items_by_state ON items (state, seq);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, finished);
"""


class BatchStoreUnusable(Exception):
    """The database cannot be opened or was written by another version of the schema."""


class BatchStore:
    def __init__(self, connection: sqlite3.Connection):
        self._db = connection

    @classmethod
    def open(cls, path: Path) -> BatchStore:
        """The store at `path` (created if missing), with items left running by a stopped process queued again."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(path, isolation_level=None, timeout=10, check_same_thread=False)
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise BatchStoreUnusable(
                    f"{path} holds batch schema version {version}, this wai knows {SCHEMA_VERSION}"
                )
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA foreign_keys=ON")
            connection.executescript(SCHEMA)
            connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except (OSError, sqlite3.Error) as exc:
            raise BatchStoreUnusable(f"cannot open the batch database {path}: {exc}") from exc
        store = cls(connection)
        store.requeue_running()
        return store

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- jobs ---------------------------------------------------------------------------------
    def submit(self, job_id: str, model: str, items: list[NewItem], now: float, max_jobs: int) -> bool:
        """Keep a new job with its items queued; False (and nothing kept) when `max_jobs` are kept already."""
        with self._transaction() as db:
            (kept,) = db.execute("SELECT count(*) FROM jobs").fetchone()
            if kept >= max_jobs:
                return False
            db.execute(
                "INSERT INTO jobs (id, model, items, created) VALUES (?, ?, ?, ?)", (job_id, model, len(items), now)
            )
            db.executemany(
                "INSERT INTO items (job, idx, input, external_reference) VALUES (?, ?, ?, ?)",
                [(job_id, index, item.input, item.external_reference) for index, item in enumerate(items)],
            )
        return True

    def job(self, job_id: str) -> Job | None:
        row = self._db.execute(
            "SELECT id, model, status, items, done_items FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        return None if row is None else Job(*row)

    def responses(self, job_id: str) -> list[str | None]:
        """Each item's answer (JSON), in the job's order; None for an item not done."""
        rows = self._db.execute("SELECT response FROM items WHERE job = ? ORDER BY idx", (job_id,))
        return [response for (response,) in rows]

    def item_states(self, job_id: str) -> list[ItemState]:
        rows = self._db.execute(
            "SELECT idx, state, attempts, completions FROM items WHERE job = ? ORDER BY idx", (job_id,)
        )
        return [ItemState(*row) for row in rows]

    def job_counts(self) -> dict[str, int]:
        """Jobs kept, by status."""
        counts = {"queued": 0, "running": 0, "done": 0}
        counts.update(self._db.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())
        return counts

    def expire(self, finished_before: float) -> int:
        """Forget jobs whose last item was done before `finished_before`, results and all; how many."""
        with self._transaction() as db:
            return db.execute("DELETE FROM jobs WHERE status = 'done' AND finished < ?", (finished_before,)).rowcount

    # --- items --------------------------------------------------------------------------------
    def claim(self) -> Claim | None:
        """The oldest queued item, now running under a new attempt number; None when none is queued."""
        with self._transaction() as db:
            row = db.execute(
                "UPDATE items SET state = 'running', attempts = attempts + 1"
                " WHERE seq = (SELECT seq FROM items WHERE state = 'queued' ORDER BY seq LIMIT 1)"
                " RETURNING seq, job, idx, input, external_reference, attempts, orphaned"
            ).fetchone()
            if row is None:
                return None
            seq, job, index, input_json, reference, attempts, orphaned = row
            db.execute("UPDATE jobs SET status = 'running' WHERE id = ? AND status = 'queued'", (job,))
            (model,) = db.execute("SELECT model FROM jobs WHERE id = ?", (job,)).fetchone()
        return Claim(seq, job, model, index, input_json, reference, attempts, orphaned)

    def complete(self, claim: Claim, response: str, now: float) -> bool:
        """Record the item's answer if `claim` still holds the item; True when recorded (once per item)."""
        with self._transaction() as db:
            recorded = db.execute(
                "UPDATE items SET state = 'done', response = ?, completions = completions + 1"
                " WHERE seq = ? AND state = 'running' AND attempts = ?",
                (response, claim.seq, claim.attempts),
            ).rowcount
            if recorded:
                db.execute(
                    "UPDATE jobs SET done_items = done_items + 1,"
                    " status = CASE WHEN done_items + 1 = items THEN 'done' ELSE status END,"
                    " finished = CASE WHEN done_items + 1 = items THEN ? ELSE finished END"
                    " WHERE id = ?",
                    (now, claim.job),
                )
        return bool(recorded)

    def requeue(self, claim: Claim) -> bool:
        """Put the item back in the queue if `claim` still holds it (to run again under a new attempt)."""
        with self._transaction() as db:
            return bool(
                db.execute(
                    "UPDATE items SET state = 'queued' WHERE seq = ? AND state = 'running' AND attempts = ?",
                    (claim.seq, claim.attempts),
                ).rowcount
            )

    def requeue_running(self) -> int:
        """Every running item back in the queue: at start, what a stopped process left; how many."""
        with self._transaction() as db:
            return db.execute(
                "UPDATE items SET state = 'queued', orphaned = orphaned + 1 WHERE state = 'running'"
            ).rowcount


class JobStore(Protocol):
    """What the batch jobs need of a store, SQLite's (`SqliteJobStore`) or the shared database's
    (server/stores/batch.py). A store that cannot be reached raises sqlite3.Error or 503 / 3048."""

    @property
    def lease_s(self) -> float | None:
        """How long a claim lasts unrenewed; None: claims last until put back."""

    async def submit(self, job_id: str, model: str, items: list[NewItem], now: float, max_jobs: int) -> bool: ...
    async def job(self, job_id: str) -> Job | None: ...
    async def responses(self, job_id: str) -> list[str | None]: ...
    async def item_states(self, job_id: str) -> list[ItemState]: ...
    async def job_counts(self) -> dict[str, int]: ...
    async def expire(self, finished_before: float) -> int: ...
    async def claim(self) -> Claim | None: ...
    async def complete(self, claim: Claim, response: str, now: float) -> bool: ...
    async def requeue(self, claim: Claim) -> bool: ...
    async def renew(self, claims: list[Claim]) -> None: ...
    async def close(self) -> None: ...


class SqliteJobStore:
    """The SQLite store behind the async interface. Its calls are short local transactions, made
    in the event loop as they always were."""

    lease_s = None

    def __init__(self, store: BatchStore):
        self.store = store

    async def submit(self, job_id: str, model: str, items: list[NewItem], now: float, max_jobs: int) -> bool:
        return self.store.submit(job_id, model, items, now, max_jobs)

    async def job(self, job_id: str) -> Job | None:
        return self.store.job(job_id)

    async def responses(self, job_id: str) -> list[str | None]:
        return self.store.responses(job_id)

    async def item_states(self, job_id: str) -> list[ItemState]:
        return self.store.item_states(job_id)

    async def job_counts(self) -> dict[str, int]:
        return self.store.job_counts()

    async def expire(self, finished_before: float) -> int:
        return self.store.expire(finished_before)

    async def claim(self) -> Claim | None:
        return self.store.claim()

    async def complete(self, claim: Claim, response: str, now: float) -> bool:
        return self.store.complete(claim, response, now)

    async def requeue(self, claim: Claim) -> bool:
        return self.store.requeue(claim)

    async def renew(self, claims: list[Claim]) -> None:
        """Nothing to renew: a claim holds until it is put back, or the next start queues it again."""

    async def close(self) -> None:
        self.store.close()
