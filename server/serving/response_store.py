"""Stored responses of the Responses API (`store: true`), in the SQLite file the batch jobs use.

Each stored response keeps its answer as sent and the conversation that led to it (its input turns and
its own output), so that `previous_response_id` continues from it and `GET /v1/responses/{id}` returns
it. The store is bounded as OpenAI's is: responses older than `responses.retention_s` and the oldest
past `responses.max_stored` are dropped when a new one is kept.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from server.serving.requests import Message, ToolCall

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    body TEXT NOT NULL,          -- the response as it was answered, JSON
    conversation TEXT NOT NULL   -- its input turns and its output, JSON
);
CREATE INDEX IF NOT EXISTS responses_by_age ON responses (created);
"""


class ResponseStore:
    def __init__(self, path: Path, max_stored: int, retention_s: float):
        self.path, self.max_stored, self.retention_s = path, max_stored, retention_s
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    def keep(self, body: dict[str, Any], conversation: list[Message]) -> None:
        now = time.time()
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT OR REPLACE INTO responses (id, created, body, conversation) VALUES (?, ?, ?, ?)",
                (body["id"], now, json.dumps(body), json.dumps([_turn(m) for m in conversation])),
            )
            db.execute("DELETE FROM responses WHERE created < ?", (now - self.retention_s,))
            db.execute(
                "DELETE FROM responses WHERE id NOT IN (SELECT id FROM responses ORDER BY created DESC LIMIT ?)",
                (self.max_stored,),
            )

    def body(self, response_id: str) -> dict[str, Any] | None:
        row = self._row("body", response_id)
        return None if row is None else json.loads(row)

    def conversation(self, response_id: str) -> list[Message] | None:
        row = self._row("conversation", response_id)
        return None if row is None else [_message(turn) for turn in json.loads(row)]

    def delete(self, response_id: str) -> bool:
        with closing(self._connect()) as db, db:
            return db.execute("DELETE FROM responses WHERE id = ?", (response_id,)).rowcount > 0

    def _row(self, column: str, response_id: str) -> str | None:
        with closing(self._connect()) as db:
            found = db.execute(
                f"SELECT {column} FROM responses WHERE id = ? AND created >= ?",
                (response_id, time.time() - self.retention_s),
            ).fetchone()
        return None if found is None else found[0]


def _turn(message: Message) -> dict[str, Any]:
    calls = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in message.tool_calls]
    return {"role": message.role, "content": message.content, "tool_calls": calls, "tool_call_id": message.tool_call_id}


def _message(turn: dict[str, Any]) -> Message:
    calls = tuple(ToolCall(c["id"], c["name"], c["arguments"]) for c in turn["tool_calls"])
    return Message(turn["role"], turn["content"], calls, turn["tool_call_id"])
