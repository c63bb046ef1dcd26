"""The shared database (`database_url`): a pool of connections, its schema's migrations, its health.

Every replica opens a pool (psycopg 3's, with each connection checked as it is taken, so that one left
broken by a restarted server is replaced rather than handed out). The schema is the numbered SQL files
in `migrations/`, each applied once in its own transaction and recorded in `wai_schema_migrations`;
replicas starting together take turns under an advisory lock, so exactly one applies each file. A
database migrated by a newer wai (a file this one does not have) is refused rather than written.

A call that cannot reach the server within `cluster.store_timeout_s` raises 503 / 3048 naming what
the store holds; `wai_store_up{store="postgres"}` says whether the last call got through. The pool
reconnects by itself, and the migrations are retried in the background until they are done, so a
replica started while the database is down serves text at once and the rest once it is back.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from server import errors, metrics

log = logging.getLogger("wai.stores")

STORE = "postgres"
# Any 64-bit number the applications sharing the database do not use: "wai" in ASCII.
MIGRATION_LOCK = 0x776169
MIGRATION_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
RETRY_MIGRATIONS_S = 2.0
# What failing to reach the server looks like; anything else is a bug, and stays a 500.
UNREACHABLE = (psycopg.OperationalError, PoolTimeout, TimeoutError)


class DatabaseTooNew(Exception):
    """The database was migrated by a newer wai: this one does not know its schema."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The schema's steps, in order (server/stores/migrations/NNNN_what.sql)."""
    found = []
    for entry in resources.files("server.stores.migrations").iterdir():
        match = MIGRATION_FILE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text()))
    return sorted(found, key=lambda m: m.version)


RECONNECT_WITHIN_S = 4.0


class Database:
    def __init__(self, url: str, timeout_s: float, max_connections: int = 8):
        self.timeout_s = timeout_s
        self.migrated = asyncio.Event()
        self._migrating: asyncio.Task[None] | None = None
        self.pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            open=False,
            timeout=timeout_s,
            # A connection that cannot be made is retried with a doubling delay until this long has
            # passed; then the next request starts afresh. Unbounded, the delay after an outage of
            # minutes would keep a replica away from a database that is back for as long again.
            reconnect_timeout=RECONNECT_WITHIN_S,
            check=AsyncConnectionPool.check_connection,
            kwargs={"autocommit": True, "connect_timeout": max(1, round(timeout_s))},
            name="wai",
        )
        metrics.STORE_UP.labels(STORE).set(0)

    # --- the app's lifespan -------------------------------------------------------------------
    async def open(self) -> None:
        """Open the pool and migrate the schema: now, or while the server is unreachable in the background.
        DatabaseTooNew stops the start."""
        await self.pool.open(wait=False)
        if not await self._try_to_migrate():
            self._migrating = asyncio.create_task(self._migrate_until_done(), name="wai-migrations")

    async def close(self) -> None:
        if self._migrating is not None:
            self._migrating.cancel()
            await asyncio.gather(self._migrating, return_exceptions=True)
        await self.pool.close()

    # --- calls --------------------------------------------------------------------------------
    @asynccontextmanager
    async def connection(
        self, what: str, operation: str, timeout_s: float | None = None
    ) -> AsyncIterator[psycopg.AsyncConnection]:
        """A connection for one call about `what` (named in the 503), counted as `operation` if it
        fails; the whole call must end within `timeout_s` (default: cluster.store_timeout_s)."""
        if not self.migrated.is_set():
            self._failed(operation)
            raise errors.store_unavailable(what)
        try:
            async with asyncio.timeout(timeout_s or self.timeout_s), self.pool.connection() as connection:
                yield connection
        except UNREACHABLE as exc:
            self._failed(operation)
            log.warning("the database did not answer (%s): %s", operation, exc)
            raise errors.store_unavailable(what) from exc
        metrics.STORE_UP.labels(STORE).set(1)

    async def ping(self) -> bool:
        """Whether the database answers now (for /readyz)."""
        try:
            async with asyncio.timeout(self.timeout_s), self.pool.connection() as connection:
                await connection.execute("SELECT 1")
        except UNREACHABLE:
            metrics.STORE_UP.labels(STORE).set(0)
            return False
        metrics.STORE_UP.labels(STORE).set(1)
        return self.migrated.is_set()

    def _failed(self, operation: str) -> None:
        metrics.STORE_UP.labels(STORE).set(0)
        metrics.STORE_FAILURES.labels(STORE, operation).inc()

    # --- the schema ---------------------------------------------------------------------------
    async def _migrate_until_done(self) -> None:
        while not await self._try_to_migrate():
            await asyncio.sleep(RETRY_MIGRATIONS_S)

    async def _try_to_migrate(self) -> bool:
        """One attempt at the migrations; False when the server could not be reached."""
        try:
            # Long enough for another replica's migrations, whose lock this one waits for.
            async with asyncio.timeout(60), self.pool.connection(timeout=self.timeout_s) as connection:
                await migrate(connection)
        except UNREACHABLE as exc:
            self._failed("migrate")
            log.warning("the database is unreachable, migrating again in %.0f s: %s", RETRY_MIGRATIONS_S, exc)
            return False
        metrics.STORE_UP.labels(STORE).set(1)
        self.migrated.set()
        return True


async def migrate(connection: psycopg.AsyncConnection) -> list[str]:
    """Apply the migrations this database lacks, one replica at a time; the names applied."""
    known = migrations()
    await connection.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
    try:
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS wai_schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        rows = await (await connection.execute("SELECT version FROM wai_schema_migrations")).fetchall()
        applied = {version for (version,) in rows}
        unknown = applied - {m.version for m in known}
        if unknown:
            raise DatabaseTooNew(
                f"the database has schema migrations {sorted(unknown)} this wai does not know: a newer wai migrated it"
            )
        done = []
        for migration in known:
            if migration.version in applied:
                continue
            async with connection.transaction():
                await connection.execute(migration.sql.encode())
                await connection.execute(
                    "INSERT INTO wai_schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
            log.info("database migrated: %s", migration.name)
            done.append(migration.name)
        return done
    finally:
        await connection.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
