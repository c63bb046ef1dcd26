"""The shared database's migrations applied by replicas starting together: under the advisory lock each
file runs exactly once, whichever replica gets it (server/stores/postgres.py), on a real Postgres."""

from __future__ import annotations

import asyncio

import psycopg

from server.stores.postgres import migrate, migrations


async def replicas_migrating_at_once(database_url: str, replicas: int) -> list[list[str]]:
    connections = [await psycopg.AsyncConnection.connect(database_url, autocommit=True) for _ in range(replicas)]
    try:
        return list(await asyncio.gather(*(migrate(connection) for connection in connections)))
    finally:
        for connection in connections:
            await connection.close()


def test_replicas_starting_together_apply_each_migration_once(postgres):
    url = postgres.new_database()
    applied = asyncio.run(replicas_migrating_at_once(url, 4))
    names = [m.name for m in migrations()]
    # One replica applied them all; the others, waiting for the lock, found nothing left to do.
    assert sorted(applied, key=len) == [[], [], [], names], applied
    with psycopg.connect(url) as connection:
        rows = connection.execute("SELECT name FROM wai_schema_migrations ORDER BY version").fetchall()
    assert [name for (name,) in rows] == names
