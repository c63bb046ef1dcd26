"""The AI Gateway's logs: one per request through a gateway, kept with its cost, bounded by count and age.

They live beside the batch jobs: in their SQLite file, or in the shared database with `database_url`
(`wai_gateway_logs`, migration 0005). A gateway keeps at most `keep_at_most` logs (its `log_management`,
and `gateways.logs_max_per_gateway` above it): past that a new log either replaces the oldest
(`DELETE_OLDEST`) or is not kept (`STOP_INSERTING`); logs older than `gateways.logs_retention_s` are
dropped as new ones come and are never shown.

Lists are filtered, ordered and counted by the database, in either dialect, from a neutral `LogQuery`
(protocol/gateway_logs.py reads it off the wire): the columns a filter or an order may name are a fixed
table here, and every value travels as a bound parameter. A log's metadata entries (its request's
`cf-aig-metadata` and what PATCH added) are rows of their own, so that `metadata.key`,
`metadata.value` and `search` are plain SQL too. A list never reads the bodies.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from server.config import Settings
from server.stores.postgres import Database

WHAT = "gateway logs"  # the store's name in its 503

Operator = Literal["eq", "neq", "contains", "lt", "gt", "gte", "lte"]
Direction = Literal["asc", "desc"]
Strategy = Literal["DELETE_OLDEST", "STOP_INSERTING"]
FilterValue = str | float | bool | None

# What each filter key compares, so which values it takes: text, flag (true/false), number, time
# (an instant, kept as wall-clock seconds), metadata (an entry's key or value, as text).
FILTER_KINDS: dict[str, str] = {
    "id": "text",
    "created_at": "time",
    "request_content_type": "text",
    "response_content_type": "text",
    "request_type": "text",
    "success": "flag",
    "cached": "flag",
    "provider": "text",
    "model": "text",
    "model_type": "text",
    "cost": "number",
    "tokens": "number",  # tokens_in + tokens_out
    "tokens_in": "number",
    "tokens_out": "number",
    "duration": "number",  # milliseconds
    "feedback": "number",
    "event_id": "text",
    "metadata.key": "metadata",
    "metadata.value": "metadata",
}
# The operators each kind takes; "gte"/"lte" only come from the deprecated min_/max_ parameters.
KIND_OPERATORS: dict[str, tuple[Operator, ...]] = {
    "text": ("eq", "neq", "contains", "lt", "gt"),
    "flag": ("eq", "neq"),
    "number": ("eq", "neq", "lt", "gt", "gte", "lte"),
    "time": ("eq", "neq", "lt", "gt", "gte", "lte"),
    "metadata": ("eq", "neq", "contains"),
}
ORDER_KEYS = (
    "created_at",
    "provider",
    "model",
    "model_type",
    "success",
    "cached",
    "cost",
    "tokens_in",
    "tokens_out",
    "duration",
    "feedback",
)


@dataclass
class GatewayLog:
    """One request through a gateway, as its logs API shows it. Times are wall-clock seconds; the
    bodies are None when the request asked for a log without payload (`cf-aig-collect-log-payload:
    false`). No field ever holds an API key: the heads are written without credentials."""

    id: str  # ULID-shaped: sorts by time
    gateway_id: str
    created_at: float
    provider: str  # "workers-ai"
    model: str  # as the request named it
    path: str  # the route below the gateway: "workers-ai/@cf/meta/llama-3-8b-instruct", "compat/chat/completions"
    request_type: str  # "workers-ai", "openai", "binding" or "universal"
    status_code: int
    success: bool
    cached: bool  # answered from the gateway's cache
    duration_ms: int
    model_type: str | None = None  # the model's task: "text-generation", "text-embeddings"
    ttft_ms: int | None = None  # to the first token (none when cached or failed before it)
    error_code: int | None = None
    finetune: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    tokens_cached: int | None = None  # prompt tokens the prefix cache served
    cost: float | None = None  # US dollars at the hosted prices (`pricing`), or `cf-aig-custom-cost`
    custom_cost: bool = False
    metadata: dict[str, str | int | float | bool] = field(default_factory=dict)  # `cf-aig-metadata`, 5 at most
    event_id: str | None = None  # `cf-aig-event-id`
    step: int = 0  # the universal endpoint's step that answered
    request_content_type: str = "application/json"
    response_content_type: str = "application/json"
    request_head: str = ""  # the request's headers as JSON text, without credentials
    response_head: str = ""
    request_size: int = 0
    response_size: int = 0
    request_body: bytes | None = None
    response_body: bytes | None = None
    feedback: float | None = None  # -1 to 1, set by PATCH
    score: float | None = None  # 0 to 100, set by PATCH
    extra: dict[str, Any] = field(default_factory=dict)  # PATCHed metadata beyond the request's own

    @property
    def all_metadata(self) -> dict[str, Any]:
        """What the log shows as its metadata: the request's own, with what PATCH set over it."""
        return {**self.metadata, **self.extra}


@dataclass(frozen=True)
class LogFilter:
    """One condition on the logs: `key` compared by `operator` with any of `values` (none of them
    for `neq`)."""

    key: str
    operator: Operator
    values: tuple[FilterValue, ...]


@dataclass(frozen=True)
class LogQuery:
    """Which logs, in which order, which page of them. Every filter must hold."""

    filters: tuple[LogFilter, ...] = ()
    order_by: str = "created_at"
    direction: Direction = "desc"
    page: int = 1
    per_page: int = 20
    search: str | None = None  # free text over the metadata, the model and the path
    meta_info: bool = False  # with the bounds and sums over every log the filters take


@dataclass(frozen=True)
class LogTotals:
    """The bounds of a list's logs (Cloudflare's `meta_info`) and, for the playground, their sums."""

    min_cost: float | None = None
    max_cost: float | None = None
    min_duration: int | None = None
    max_duration: int | None = None
    min_tokens_in: int | None = None
    max_tokens_in: int | None = None
    min_tokens_out: int | None = None
    max_tokens_out: int | None = None
    min_total_tokens: int | None = None
    max_total_tokens: int | None = None
    total_cost: float = 0.0
    total_tokens_in: int = 0
    total_tokens_out: int = 0
    total_tokens_cached: int = 0


@dataclass(frozen=True)
class LogPage:
    items: list[GatewayLog]  # without their bodies
    total_count: int  # logs the filters take, on every page
    totals: LogTotals | None = None  # with `meta_info`


class Unchanged:
    """A PATCH field the request did not give (None is a value: it clears the field)."""


UNCHANGED = Unchanged()


class LogStore(Protocol):
    async def add(self, log: GatewayLog, keep_at_most: int, when_full: Strategy) -> bool: ...
    async def page(self, gateway_id: str, query: LogQuery) -> LogPage: ...
    async def get(self, gateway_id: str, log_id: str) -> GatewayLog | None: ...
    async def patch(
        self,
        gateway_id: str,
        log_id: str,
        feedback: float | None | Unchanged = UNCHANGED,
        score: float | None | Unchanged = UNCHANGED,
        metadata: dict[str, Any] | None | Unchanged = UNCHANGED,
    ) -> bool: ...
    async def delete(self, gateway_id: str, query: LogQuery, limit: int) -> int: ...
    async def delete_gateway(self, gateway_id: str) -> None: ...


def build_log_store(settings: Settings, database: Database | None, clock: Callable[[], float] = time.time) -> LogStore:
    """The shared database's store when there is one, else the SQLite file's."""
    retention_s = settings.gateways.logs_retention_s
    if database is not None:
        return PostgresLogStore(database, retention_s, clock)
    return SqliteLogStore(settings.batch_db_path, retention_s, clock)


# --- log ids -------------------------------------------------------------------------------------

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ids_lock = threading.Lock()
_last_id = [0, 0]  # the last id's milliseconds and random part


def new_log_id(now: float | None = None) -> str:
    """A ULID: 48 bits of milliseconds then 80 random bits, in Crockford's base32 (26 characters).
    Ids made in the same millisecond count up from the first, so that they sort as they were made."""
    ms = int((time.time() if now is None else now) * 1000)
    with _ids_lock:
        last_ms, last_random = _last_id
        random_part = last_random + 1 if ms == last_ms and last_random + 1 < 1 << 80 else secrets.randbits(80)
        _last_id[:] = [ms, random_part]
    value = (ms << 80) | random_part
    return "".join(CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def metadata_text(value: Any) -> str:
    """A metadata value as the filters compare it: `true`/`false`, numbers as JSON writes them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# --- SQL, in either dialect ------------------------------------------------------------------------


@dataclass(frozen=True)
class Dialect:
    logs: str
    metadata: str
    mark: str  # a bound parameter
    find: str  # a substring's position, 0 when absent


SQLITE = Dialect("gateway_logs", "gateway_log_metadata", "?", "instr")
POSTGRES = Dialect("wai_gateway_logs", "wai_gateway_log_metadata", "%s", "strpos")

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS gateway_logs (
    gateway_id TEXT NOT NULL,
    id TEXT NOT NULL,
    created_at REAL NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    model_type TEXT,
    path TEXT NOT NULL,
    request_type TEXT NOT NULL,
    status_code INTEGER NOT NULL,
    success INTEGER NOT NULL,
    cached INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    ttft_ms INTEGER,
    error_code INTEGER,
    finetune TEXT,
    tokens_in INTEGER,
    tokens_out INTEGER,
    tokens_cached INTEGER,
    cost REAL,
    custom_cost INTEGER NOT NULL,
    metadata TEXT NOT NULL,
    extra TEXT NOT NULL,
    event_id TEXT,
    step INTEGER NOT NULL,
    request_content_type TEXT NOT NULL,
    response_content_type TEXT NOT NULL,
    request_head TEXT NOT NULL,
    response_head TEXT NOT NULL,
    request_size INTEGER NOT NULL,
    response_size INTEGER NOT NULL,
    feedback REAL,
    score REAL,
    request_body BLOB,
    response_body BLOB,
    PRIMARY KEY (gateway_id, id)
);
CREATE INDEX IF NOT EXISTS gateway_logs_by_age ON gateway_logs (gateway_id, created_at);
CREATE INDEX IF NOT EXISTS gateway_logs_expiry ON gateway_logs (created_at);
CREATE TABLE IF NOT EXISTS gateway_log_metadata (
    gateway_id TEXT NOT NULL,
    log_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (gateway_id, log_id, key),
    FOREIGN KEY (gateway_id, log_id) REFERENCES gateway_logs (gateway_id, id) ON DELETE CASCADE
);
"""

# A log's columns as a list reads them (no bodies), then the bodies.
LIST_COLUMNS = (
    "id",
    "gateway_id",
    "created_at",
    "provider",
    "model",
    "model_type",
    "path",
    "request_type",
    "status_code",
    "success",
    "cached",
    "duration_ms",
    "ttft_ms",
    "error_code",
    "finetune",
    "tokens_in",
    "tokens_out",
    "tokens_cached",
    "cost",
    "custom_cost",
    "metadata",
    "extra",
    "event_id",
    "step",
    "request_content_type",
    "response_content_type",
    "request_head",
    "response_head",
    "request_size",
    "response_size",
    "feedback",
    "score",
)
BODY_COLUMNS = ("request_body", "response_body")
JSON_COLUMNS = ("metadata", "extra")
FLAG_COLUMNS = ("success", "cached", "custom_cost")

TOTAL_TOKENS = "(COALESCE(l.tokens_in, 0) + COALESCE(l.tokens_out, 0))"
# The only column expressions a filter or an order may name.
KEY_COLUMNS: dict[str, str] = {
    **{key: f"l.{key}" for key in FILTER_KINDS if FILTER_KINDS[key] != "metadata"},
    "tokens": TOTAL_TOKENS,
    "duration": "l.duration_ms",
    "metadata.key": "m.key",
    "metadata.value": "m.value",
}
TOTALS = (
    "COUNT(*), MIN(l.cost), MAX(l.cost), MIN(l.duration_ms), MAX(l.duration_ms), MIN(l.tokens_in),"
    f" MAX(l.tokens_in), MIN(l.tokens_out), MAX(l.tokens_out), MIN({TOTAL_TOKENS}), MAX({TOTAL_TOKENS}),"
    " SUM(l.cost), SUM(l.tokens_in), SUM(l.tokens_out), SUM(l.tokens_cached)"
)
COMPARISONS = {"lt": "<", "gt": ">", "lte": "<=", "gte": ">="}
NUL = "\x00"
LAST_OFFSET = 2**62  # past any count of logs, within both databases' integers: a page further on is empty


@dataclass
class Statement:
    """SQL written with `?` for each value, in the order of `params`; `in_dialect` gives it the
    dialect's own marks (the fixed SQL text holds no `?` of its own)."""

    sql: str
    params: list[Any] = field(default_factory=list)

    def in_dialect(self, dialect: Dialect) -> tuple[str, list[Any]]:
        return self.sql.replace("?", dialect.mark), self.params


class LogSql:
    """The statements of the store, in one dialect."""

    def __init__(self, dialect: Dialect):
        self.d = dialect

    def _entries_of(self) -> str:
        return f"SELECT 1 FROM {self.d.metadata} m WHERE m.gateway_id = l.gateway_id AND m.log_id = l.id"

    def _contains(self, column: str) -> str:
        return f"{self.d.find}(LOWER({column}), LOWER(?)) > 0"

    def _compare(self, key: str, operator: Operator, values: Sequence[FilterValue], params: list[Any]) -> str:
        column = KEY_COLUMNS[key]
        present = [value for value in values if value is not None]
        has_null = len(present) < len(values)
        if operator in ("eq", "neq"):
            listed = f"{column} IN ({', '.join('?' * len(present))})" if present else None
            params.extend(present)
            if operator == "eq":
                return "(" + " OR ".join(filter(None, [listed, f"{column} IS NULL" if has_null else None])) + ")"
            if has_null:
                return f"({column} IS NOT NULL" + (f" AND NOT {listed})" if listed else ")")
            return f"({column} IS NULL OR NOT {listed})"
        params.extend(present)
        if operator == "contains":
            each = self._contains(column)
        else:
            each = f"{column} {COMPARISONS[operator]} ?"
        return "(" + " OR ".join([each] * len(present) or ["1 = 0"]) + ")"

    def where(self, gateway_id: str, filters: Iterable[LogFilter], search: str | None, since: float) -> Statement:
        """The logs of `gateway_id` kept since `since` that every filter takes (the table as `l`).
        A log's metadata filters must all hold for one of its entries (a key and its value); a
        `neq` one, for none of them."""
        params: list[Any] = [gateway_id, since]
        parts = ["l.gateway_id = ?", "l.created_at >= ?"]
        on_entries = []
        for each in filters:
            if each.key not in KEY_COLUMNS or each.operator not in KIND_OPERATORS[FILTER_KINDS[each.key]]:
                raise ValueError(f"no filter {each.key} {each.operator}")
            if not each.values:
                raise ValueError(f"the filter on {each.key} has no value")
            if FILTER_KINDS[each.key] != "metadata":
                parts.append(self._compare(each.key, each.operator, each.values, params))
            elif each.operator == "neq":
                condition = self._compare(each.key, "eq", each.values, params)
                parts.append(f"NOT EXISTS ({self._entries_of()} AND {condition})")
            else:
                on_entries.append(each)
        if on_entries:
            conditions = [self._compare(each.key, each.operator, each.values, params) for each in on_entries]
            parts.append(f"EXISTS ({self._entries_of()} AND {' AND '.join(conditions)})")
        if search:
            in_entries = f"{self._contains('m.key')} OR {self._contains('m.value')}"
            parts.append(
                f"({self._contains('l.model')} OR {self._contains('l.path')}"
                f" OR EXISTS ({self._entries_of()} AND ({in_entries})))"
            )
            params.extend([search] * 4)
        return Statement(" AND ".join(parts), params)

    @staticmethod
    def order(order_by: str, direction: Direction) -> str:
        """Missing values last whichever the direction; the id breaks ties, so pages never overlap."""
        if order_by not in ORDER_KEYS:
            raise ValueError(f"no order {order_by}")
        column = KEY_COLUMNS[order_by]
        way = "ASC" if direction == "asc" else "DESC"
        return f"ORDER BY ({column} IS NULL), {column} {way}, l.id {way}"

    def totals(self, where: Statement) -> Statement:
        return Statement(f"SELECT {TOTALS} FROM {self.d.logs} l WHERE {where.sql}", where.params)

    def items(self, where: Statement, query: LogQuery) -> Statement:
        columns = ", ".join(f"l.{c}" for c in LIST_COLUMNS)
        return Statement(
            f"SELECT {columns} FROM {self.d.logs} l WHERE {where.sql} {self.order(query.order_by, query.direction)}"
            " LIMIT ? OFFSET ?",
            [*where.params, query.per_page, min((query.page - 1) * query.per_page, LAST_OFFSET)],
        )

    def one(self, gateway_id: str, log_id: str, since: float) -> Statement:
        columns = ", ".join(f"l.{c}" for c in (*LIST_COLUMNS, *BODY_COLUMNS))
        return Statement(
            f"SELECT {columns} FROM {self.d.logs} l WHERE l.gateway_id = ? AND l.id = ? AND l.created_at >= ?",
            [gateway_id, log_id, since],
        )

    def delete_matching(self, where: Statement, query: LogQuery, limit: int) -> Statement:
        chosen = f"SELECT l.id FROM {self.d.logs} l WHERE {where.sql} {self.order(query.order_by, query.direction)}"
        return Statement(
            f"DELETE FROM {self.d.logs} WHERE gateway_id = ? AND id IN ({chosen} LIMIT ?)",
            [where.params[0], *where.params, limit],
        )

    def delete_expired(self, before: float) -> Statement:
        return Statement(f"DELETE FROM {self.d.logs} WHERE created_at < ?", [before])

    def delete_one(self, gateway_id: str, log_id: str) -> Statement:
        return Statement(f"DELETE FROM {self.d.logs} WHERE gateway_id = ? AND id = ?", [gateway_id, log_id])

    def delete_gateway(self, gateway_id: str) -> Statement:
        return Statement(f"DELETE FROM {self.d.logs} WHERE gateway_id = ?", [gateway_id])

    def count(self, gateway_id: str) -> Statement:
        return Statement(f"SELECT COUNT(*) FROM {self.d.logs} WHERE gateway_id = ?", [gateway_id])

    def delete_oldest(self, gateway_id: str, how_many: int) -> Statement:
        oldest = f"SELECT id FROM {self.d.logs} WHERE gateway_id = ? ORDER BY created_at ASC, id ASC LIMIT ?"
        return Statement(
            f"DELETE FROM {self.d.logs} WHERE gateway_id = ? AND id IN ({oldest})", [gateway_id, gateway_id, how_many]
        )

    def insert(self, log: GatewayLog) -> Statement:
        columns = (*LIST_COLUMNS, *BODY_COLUMNS)
        return Statement(
            f"INSERT INTO {self.d.logs} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            [column_value(log, c) for c in columns],
        )

    def insert_entries(self, log: GatewayLog) -> list[Statement]:
        return [
            Statement(
                f"INSERT INTO {self.d.metadata} (gateway_id, log_id, key, value) VALUES (?, ?, ?, ?)",
                [log.gateway_id, log.id, key, metadata_text(value)],
            )
            for key, value in log.all_metadata.items()
        ]

    def delete_entries(self, gateway_id: str, log_id: str) -> Statement:
        return Statement(f"DELETE FROM {self.d.metadata} WHERE gateway_id = ? AND log_id = ?", [gateway_id, log_id])

    def update(self, log: GatewayLog) -> Statement:
        return Statement(
            f"UPDATE {self.d.logs} SET feedback = ?, score = ?, extra = ? WHERE gateway_id = ? AND id = ?",
            [log.feedback, log.score, json.dumps(log.extra), log.gateway_id, log.id],
        )


def column_value(log: GatewayLog, column: str) -> Any:
    value = getattr(log, column)
    return json.dumps(value) if column in JSON_COLUMNS else value


def log_of(row: Sequence[Any], with_bodies: bool) -> GatewayLog:
    columns = (*LIST_COLUMNS, *BODY_COLUMNS) if with_bodies else LIST_COLUMNS
    values = dict(zip(columns, row, strict=True))
    for column in JSON_COLUMNS:
        values[column] = json.loads(values[column])
    for column in FLAG_COLUMNS:
        values[column] = bool(values[column])
    for column in BODY_COLUMNS:
        if values.get(column) is not None:
            values[column] = bytes(values[column])
    return GatewayLog(**values)


def totals_of(row: Sequence[Any]) -> LogTotals:
    """From the totals statement's row: the count, the bounds (costs, then durations and tokens), the sums."""
    cost = [None if v is None else float(v) for v in row[1:3]]
    duration, tokens_in, tokens_out, total_tokens = (
        [None if v is None else int(v) for v in row[start : start + 2]] for start in (3, 5, 7, 9)
    )
    sums = row[11:15]
    return LogTotals(
        min_cost=cost[0],
        max_cost=cost[1],
        min_duration=duration[0],
        max_duration=duration[1],
        min_tokens_in=tokens_in[0],
        max_tokens_in=tokens_in[1],
        min_tokens_out=tokens_out[0],
        max_tokens_out=tokens_out[1],
        min_total_tokens=total_tokens[0],
        max_total_tokens=total_tokens[1],
        total_cost=float(sums[0] or 0),
        total_tokens_in=int(sums[1] or 0),
        total_tokens_out=int(sums[2] or 0),
        total_tokens_cached=int(sums[3] or 0),
    )


def patched(
    log: GatewayLog,
    feedback: float | None | Unchanged,
    score: float | None | Unchanged,
    metadata: dict[str, Any] | None | Unchanged,
) -> GatewayLog:
    """The log with what a PATCH set: its metadata replaces what an earlier PATCH set, over the
    request's own entries; None clears a field."""
    if not isinstance(feedback, Unchanged):
        log.feedback = feedback
    if not isinstance(score, Unchanged):
        log.score = score
    if not isinstance(metadata, Unchanged):
        log.extra = dict(metadata or {})
    return log


# --- the stores ------------------------------------------------------------------------------------


class SqliteLogStore:
    """Its calls are short local transactions, made in the event loop."""

    def __init__(self, path: Path, retention_s: float, clock: Callable[[], float] = time.time):
        self.path, self.retention_s, self.clock = path, retention_s, clock
        self.sql = LogSql(SQLITE)
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.executescript(SQLITE_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10)
        db.execute("PRAGMA foreign_keys = ON")  # a log's metadata entries go with it
        return db

    def _run(self, db: sqlite3.Connection, statement: Statement) -> sqlite3.Cursor:
        return db.execute(*statement.in_dialect(SQLITE))

    def _since(self) -> float:
        return self.clock() - self.retention_s

    async def add(self, log: GatewayLog, keep_at_most: int, when_full: Strategy) -> bool:
        with closing(self._connect()) as db, db:
            self._run(db, self.sql.delete_expired(self._since()))
            self._run(db, self.sql.delete_one(log.gateway_id, log.id))  # a log written again replaces itself
            kept = self._run(db, self.sql.count(log.gateway_id)).fetchone()[0]
            if kept >= keep_at_most:
                if when_full == "STOP_INSERTING":
                    return False
                self._run(db, self.sql.delete_oldest(log.gateway_id, kept - keep_at_most + 1))
            self._run(db, self.sql.insert(log))
            for entry in self.sql.insert_entries(log):
                self._run(db, entry)
        return True

    async def page(self, gateway_id: str, query: LogQuery) -> LogPage:
        where = self.sql.where(gateway_id, query.filters, query.search, self._since())
        with closing(self._connect()) as db:
            totals = self._run(db, self.sql.totals(where)).fetchone()
            rows = self._run(db, self.sql.items(where, query)).fetchall()
        items = [log_of(row, with_bodies=False) for row in rows]
        return LogPage(items, totals[0], totals_of(totals) if query.meta_info else None)

    async def get(self, gateway_id: str, log_id: str) -> GatewayLog | None:
        with closing(self._connect()) as db:
            row = self._run(db, self.sql.one(gateway_id, log_id, self._since())).fetchone()
        return None if row is None else log_of(row, with_bodies=True)

    async def patch(
        self,
        gateway_id: str,
        log_id: str,
        feedback: float | None | Unchanged = UNCHANGED,
        score: float | None | Unchanged = UNCHANGED,
        metadata: dict[str, Any] | None | Unchanged = UNCHANGED,
    ) -> bool:
        with closing(self._connect()) as db, db:
            row = self._run(db, self.sql.one(gateway_id, log_id, self._since())).fetchone()
            if row is None:
                return False
            log = patched(log_of(row, with_bodies=True), feedback, score, metadata)
            self._run(db, self.sql.update(log))
            self._run(db, self.sql.delete_entries(gateway_id, log_id))
            for entry in self.sql.insert_entries(log):
                self._run(db, entry)
        return True

    async def delete(self, gateway_id: str, query: LogQuery, limit: int) -> int:
        where = self.sql.where(gateway_id, query.filters, query.search, self._since())
        with closing(self._connect()) as db, db:
            return self._run(db, self.sql.delete_matching(where, query, limit)).rowcount

    async def delete_gateway(self, gateway_id: str) -> None:
        with closing(self._connect()) as db, db:
            self._run(db, self.sql.delete_gateway(gateway_id))


class PostgresLogStore:
    """The same rules in `wai_gateway_logs`; `created_at` is the writing replica's wall clock. Adds to
    one gateway take turns (a transaction's advisory lock), so that its bound holds across replicas."""

    LOCK_CLASS = 0x776169  # with the gateway's hash: the advisory lock of its adds

    def __init__(self, database: Database, retention_s: float, clock: Callable[[], float] = time.time):
        self.database, self.retention_s, self.clock = database, retention_s, clock
        self.sql = LogSql(POSTGRES)

    def _since(self) -> float:
        return self.clock() - self.retention_s

    @staticmethod
    async def _run(conn: Any, statement: Statement) -> Any:
        return await conn.execute(*statement.in_dialect(POSTGRES))

    async def add(self, log: GatewayLog, keep_at_most: int, when_full: Strategy) -> bool:
        async with self.database.connection(WHAT, "add") as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (self.LOCK_CLASS, log.gateway_id))
            await self._run(conn, self.sql.delete_expired(self._since()))
            await self._run(conn, self.sql.delete_one(log.gateway_id, log.id))
            kept = (await (await self._run(conn, self.sql.count(log.gateway_id))).fetchone())[0]
            if kept >= keep_at_most:
                if when_full == "STOP_INSERTING":
                    return False
                await self._run(conn, self.sql.delete_oldest(log.gateway_id, kept - keep_at_most + 1))
            await self._run(conn, self.sql.insert(log))
            for entry in self.sql.insert_entries(log):
                await self._run(conn, entry)
        return True

    async def page(self, gateway_id: str, query: LogQuery) -> LogPage:
        where = self.sql.where(gateway_id, query.filters, query.search, self._since())
        async with self.database.connection(WHAT, "list") as conn:
            totals = await (await self._run(conn, self.sql.totals(where))).fetchone()
            rows = await (await self._run(conn, self.sql.items(where, query))).fetchall()
        items = [log_of(row, with_bodies=False) for row in rows]
        return LogPage(items, totals[0], totals_of(totals) if query.meta_info else None)

    async def get(self, gateway_id: str, log_id: str) -> GatewayLog | None:
        if NUL in log_id:  # Postgres text cannot hold it, so no log has it
            return None
        async with self.database.connection(WHAT, "read") as conn:
            row = await (await self._run(conn, self.sql.one(gateway_id, log_id, self._since()))).fetchone()
        return None if row is None else log_of(row, with_bodies=True)

    async def patch(
        self,
        gateway_id: str,
        log_id: str,
        feedback: float | None | Unchanged = UNCHANGED,
        score: float | None | Unchanged = UNCHANGED,
        metadata: dict[str, Any] | None | Unchanged = UNCHANGED,
    ) -> bool:
        if NUL in log_id:
            return False
        async with self.database.connection(WHAT, "patch") as conn, conn.transaction():
            one = self.sql.one(gateway_id, log_id, self._since())
            row = await (await conn.execute(one.in_dialect(POSTGRES)[0] + " FOR UPDATE", one.params)).fetchone()
            if row is None:
                return False
            log = patched(log_of(row, with_bodies=True), feedback, score, metadata)
            await self._run(conn, self.sql.update(log))
            await self._run(conn, self.sql.delete_entries(gateway_id, log_id))
            for entry in self.sql.insert_entries(log):
                await self._run(conn, entry)
        return True

    async def delete(self, gateway_id: str, query: LogQuery, limit: int) -> int:
        where = self.sql.where(gateway_id, query.filters, query.search, self._since())
        async with self.database.connection(WHAT, "delete") as conn:
            return (await self._run(conn, self.sql.delete_matching(where, query, limit))).rowcount

    async def delete_gateway(self, gateway_id: str) -> None:
        async with self.database.connection(WHAT, "delete") as conn:
            await self._run(conn, self.sql.delete_gateway(gateway_id))
