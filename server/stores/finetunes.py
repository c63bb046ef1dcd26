"""The fine-tune registry and each fine-tune's files in the shared database (`database_url`).

Every replica reaches them with no shared volume: a fine-tune is a row of `wai_finetunes`, its two
files are rows of `wai_finetune_files`, each file in chunks of about 1 MiB (a row never holds a
whole adapter, and a file is read and written a chunk at a time). A stored file, its fine-tune's new
engine id and its modification time commit in one transaction, and a fetch reads the row and the
files in one snapshot, so a replica never pairs new files with an old engine id. Deleting the row
deletes its files (ON DELETE CASCADE). The schema is migrations/0002_finetunes.sql.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import psycopg

from server import errors
from server.stores.postgres import Database

WHAT = "fine-tunes"  # as the 503 names the store
CHUNK_BYTES = 1 << 20
# A file's whole transfer, in or out: an adapter of a few hundred MiB takes seconds, not minutes.
FILES_TIMEOUT_S = 300.0
COLUMNS = "id, name, model, description, public, created_at, modified_at, engine_id"
# A fine-tune by id, or else by name (an id wins when a name looks like another fine-tune's id).
BY_ID_OR_NAME = (
    f"SELECT {COLUMNS} FROM wai_finetunes WHERE id = %(key)s OR name = %(key)s ORDER BY id = %(key)s DESC LIMIT 1"
)


@dataclass(frozen=True)
class StoredFinetune:
    """A fine-tune's row."""

    id: str
    name: str
    model: str
    description: str
    public: bool
    created_at: str
    modified_at: str
    engine_id: int | None


def stored(row: tuple) -> StoredFinetune:
    return StoredFinetune(*row)


class FinetuneStore:
    def __init__(self, database: Database):
        self.database = database

    async def create(self, finetune: StoredFinetune) -> StoredFinetune:
        """Add a fine-tune with no files; 409 / 3044 when its name is taken."""
        async with self.database.connection(WHAT, "finetune_create") as conn:
            cursor = await conn.execute(
                f"INSERT INTO wai_finetunes ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                f" ON CONFLICT (name) DO NOTHING RETURNING {COLUMNS}",
                (
                    finetune.id,
                    finetune.name,
                    finetune.model,
                    finetune.description,
                    finetune.public,
                    finetune.created_at,
                    finetune.modified_at,
                    finetune.engine_id,
                ),
            )
            row = await cursor.fetchone()
        if row is None:
            raise errors.finetune_name_taken(finetune.name)
        return stored(row)

    async def finetunes(self, public_only: bool = False) -> list[StoredFinetune]:
        async with self.database.connection(WHAT, "finetune_list") as conn:
            cursor = await conn.execute(
                f"SELECT {COLUMNS} FROM wai_finetunes WHERE public OR NOT %s ORDER BY created_at, name", (public_only,)
            )
            return [stored(row) for row in await cursor.fetchall()]

    async def engine_ids(self) -> dict[str, int | None]:
        """Every fine-tune's id and the engine id of its files: what a replica's copies are checked against."""
        async with self.database.connection(WHAT, "finetune_sync") as conn:
            cursor = await conn.execute("SELECT id, engine_id FROM wai_finetunes")
            return dict(await cursor.fetchall())

    async def find(self, id_or_name: str) -> StoredFinetune | None:
        async with self.database.connection(WHAT, "finetune_get") as conn:
            row = await (await conn.execute(BY_ID_OR_NAME, {"key": id_or_name})).fetchone()
        return stored(row) if row is not None else None

    async def delete(self, id_or_name: str) -> StoredFinetune | None:
        """Remove a fine-tune and its files; None when there was none."""
        async with self.database.connection(WHAT, "finetune_delete") as conn:
            cursor = await conn.execute(
                f"DELETE FROM wai_finetunes WHERE id = (SELECT id FROM ({BY_ID_OR_NAME}) AS found) RETURNING {COLUMNS}",
                {"key": id_or_name},
            )
            row = await cursor.fetchone()
        return stored(row) if row is not None else None

    async def store_file(self, finetune_id: str, file_name: str, path: Path, modified_at: str) -> StoredFinetune | None:
        """Replace one of a fine-tune's files with the file at `path`, and give the fine-tune a new
        engine id, in one transaction; None when the fine-tune is gone (deleted meanwhile)."""
        async with (
            self.database.connection(WHAT, "finetune_store_file", timeout_s=FILES_TIMEOUT_S) as conn,
            conn.transaction(),
        ):
            found = await (
                await conn.execute("SELECT id FROM wai_finetunes WHERE id = %s FOR UPDATE", (finetune_id,))
            ).fetchone()
            if found is None:
                return None
            await conn.execute(
                "DELETE FROM wai_finetune_files WHERE finetune = %s AND file_name = %s", (finetune_id, file_name)
            )
            with path.open("rb") as file:
                chunk = 0
                while data := await asyncio.to_thread(file.read, CHUNK_BYTES):
                    await conn.execute(
                        "INSERT INTO wai_finetune_files (finetune, file_name, chunk, data) VALUES (%s, %s, %s, %s)",
                        (finetune_id, file_name, chunk, data),
                    )
                    chunk += 1
            cursor = await conn.execute(
                "UPDATE wai_finetunes SET engine_id = nextval('wai_finetune_engine_ids'), modified_at = %s"
                f" WHERE id = %s RETURNING {COLUMNS}",
                (modified_at, finetune_id),
            )
            row = await cursor.fetchone()
        return stored(row) if row is not None else None

    async def fetch(
        self, id_or_name: str, folder: Path, file_names: tuple[str, ...]
    ) -> tuple[StoredFinetune, list[str]] | None:
        """Write those of `file_names` the fine-tune has into `folder`; the fine-tune's row and the
        names written, read in one snapshot, or None when there is no such fine-tune."""
        async with (
            self.database.connection(WHAT, "finetune_fetch", timeout_s=FILES_TIMEOUT_S) as conn,
            conn.transaction(),
        ):
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            row = await (await conn.execute(BY_ID_OR_NAME, {"key": id_or_name})).fetchone()
            if row is None:
                return None
            finetune = stored(row)
            written = [name for name in file_names if await self._write_file(conn, finetune.id, name, folder / name)]
        return finetune, written

    async def _write_file(self, conn: psycopg.AsyncConnection, finetune_id: str, file_name: str, path: Path) -> bool:
        """Stream one file's chunks into `path`; False (and no file) when the fine-tune lacks it."""
        chunks = conn.cursor().stream(
            "SELECT data FROM wai_finetune_files WHERE finetune = %s AND file_name = %s ORDER BY chunk",
            (finetune_id, file_name),
        )
        file = None
        try:
            async for (data,) in chunks:
                if file is None:
                    file = path.open("wb")
                await asyncio.to_thread(file.write, data)
        finally:
            if file is not None:
                file.close()
        return file is not None
