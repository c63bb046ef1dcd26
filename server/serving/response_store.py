"""Stored responses of the Responses API (`store: true`), in SQLite or in the shared database.

Without `database_url` they live in the SQLite file the batch jobs use; with it in `wai_responses`, so
that any replica answers for a response another kept.

Each stored response keeps its answer as sent and the conversation that led to it (its input turns and
its own output), so that `previous_response_id` continues from it and `GET /v1/responses/{id}` returns
it. The store is bounded as OpenAI's is: responses older than `responses.retention_s` and the oldest
past `responses.max_stored` are dropped when a new one is kept. The database unreachable, a call that
needs it answers 503 / 3048 "The responses store is unavailable".
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Protocol

from server.config import Settings
from server.serving.requests import Message, ToolCall
from server.stores.postgres import Database

WHAT = "responses"  # the store's name in its 503

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    body TEXT NOT NULL,          -- the response as it was answered, JSON
    conversation TEXT NOT NULL   -- its input turns and its output, JSON
);
CREATE INDEX IF NOT EXISTS responses_by_age ON responses (created);
"""


class ResponseStore(Protocol):
    async def keep(self, body: dict[str, Any], conversation: list[Message]) -> None: ...
    async def body(self, response_id: str) -> dict[str, Any] | None: ...
    async def conversation(self, response_id: str) -> list[Message] | None: ...
    async def delete(self, response_id: str) -> bool: ...


def response_store(settings: Settings, database: Database | None) -> ResponseStore:
    """The shared database's store when there is one, else the SQLite file's."""
    max_stored, retention_s = settings.responses.max_stored, settings.responses.retention_s
    if database is not None:
        return PostgresResponseStore(database, max_stored, retention_s)
    return SqliteResponseStore(settings.batch_db_path, max_stored, retention_s)


class SqliteResponseStore:
    """Its calls are short local transactions, made in the event loop."""

    def __init__(self, path: Path, max_stored: int, retention_s: float):
        self.path, self.max_stored, self.retention_s = path, max_stored, retention_s
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    async def keep(self, body: dict[str, Any], conversation: list[Message]) -> None:
        now = time.time()
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT OR REPLACE INTO responses (id, created, body, conversation) VALUES (?, ?, ?, ?)",
                (body["id"], now, json.dumps(body), conversation_json(conversation)),
            )
            db.execute("DELETE FROM responses WHERE created < ?", (now - self.retention_s,))
            db.execute(
                "DELETE FROM responses WHERE id NOT IN (SELECT id FROM responses ORDER BY created DESC LIMIT ?)",
                (self.max_stored,),
            )

    async def body(self, response_id: str) -> dict[str, Any] | None:
        row = self._row("body", response_id)
        return None if row is None else json.loads(row)

    async def conversation(self, response_id: str) -> list[Message] | None:
        row = self._row("conversation", response_id)
        return None if row is None else conversation_of(row)

    async def delete(self, response_id: str) -> bool:
        with closing(self._connect()) as db, db:
            return db.execute("DELETE FROM responses WHERE id = ?", (response_id,)).rowcount > 0

    def _row(self, column: str, response_id: str) -> str | None:
        with closing(self._connect()) as db:
            found = db.execute(
                f"SELECT {column} FROM responses WHERE id = ? AND created >= ?",
                (response_id, time.time() - self.retention_s),
            ).fetchone()
        return None if found is None else found[0]


class PostgresResponseStore:
    """The same rules in `wai_responses`; `created` is the keeping replica's wall clock, as in SQLite."""

    def __init__(self, database: Database, max_stored: int, retention_s: float):
        self.database, self.max_stored, self.retention_s = database, max_stored, retention_s

    async def keep(self, body: dict[str, Any], conversation: list[Message]) -> None:
        now = time.time()
        async with self.database.connection(WHAT, "keep") as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO wai_responses (id, created, body, conversation) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (id) DO UPDATE SET created = EXCLUDED.created, body = EXCLUDED.body,"
                " conversation = EXCLUDED.conversation",
                (body["id"], now, json.dumps(body), conversation_json(conversation)),
            )
            await conn.execute("DELETE FROM wai_responses WHERE created < %s", (now - self.retention_s,))
            await conn.execute(
                "DELETE FROM wai_responses WHERE id IN (SELECT id FROM wai_responses ORDER BY created DESC OFFSET %s)",
                (self.max_stored,),
            )

    async def body(self, response_id: str) -> dict[str, Any] | None:
        row = await self._row("body", response_id)
        return None if row is None else json.loads(row)

    async def conversation(self, response_id: str) -> list[Message] | None:
        row = await self._row("conversation", response_id)
        return None if row is None else conversation_of(row)

    async def delete(self, response_id: str) -> bool:
        async with self.database.connection(WHAT, "delete") as conn:
            cursor = await conn.execute("DELETE FROM wai_responses WHERE id = %s", (response_id,))
            return cursor.rowcount > 0

    async def _row(self, column: str, response_id: str) -> str | None:
        async with self.database.connection(WHAT, "read") as conn:
            cursor = await conn.execute(
                f"SELECT {column} FROM wai_responses WHERE id = %s AND created >= %s",
                (response_id, time.time() - self.retention_s),
            )
            found = await cursor.fetchone()
        return None if found is None else found[0]


def conversation_json(conversation: list[Message]) -> str:
    return json.dumps([_turn(m) for m in conversation])


def conversation_of(stored: str) -> list[Message]:
    return [_message(turn) for turn in json.loads(stored)]


def _turn(message: Message) -> dict[str, Any]:
    calls = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in message.tool_calls]
    return {"role": message.role, "content": message.content, "tool_calls": calls, "tool_call_id": message.tool_call_id}


def _message(turn: dict[str, Any]) -> Message:
    calls = tuple(ToolCall(c["id"], c["name"], c["arguments"]) for c in turn["tool_calls"])
    return Message(turn["role"], turn["content"], calls, turn["tool_call_id"])
