"""AI Gateways: named policies a request passes through on its way to a model.

A gateway caches answers, logs requests, limits its rate and retries failed attempts (docs/compatibility.md,
"AI Gateway").

Gateways are declared in the config file (`gateways.declared`, read-only through the API) or made
through Cloudflare's gateways API and kept in the batch jobs' SQLite file, or in the shared database
with `database_url`. The gateway `default` is made on its first use, as Cloudflare's is.

A request through a gateway reads it through `Gateways.for_request`, which keeps each stored gateway it
read for a second: a change made through another replica reaches this one within that second. The
database unreachable, a call that needs it answers 503 / 3048 "The gateways store is unavailable".
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol

from server import errors
from server.config import Settings
from server.stores.postgres import Database

DEFAULT_GATEWAY = "default"  # made on first use, with caching off and logs on


@dataclass(frozen=True)
class Gateway:
    """One gateway's settings, by Cloudflare's names. `other` holds the settings wai keeps and returns
    but does not act on (otel, dlp, guardrails, ...). Times are wall-clock seconds."""

    id: str
    cache_ttl: int | None = None  # seconds; 0 or None: answers are not cached unless a request asks
    cache_invalidate_on_update: bool = False  # an update makes its cached answers unreachable
    collect_logs: bool = True
    rate_limiting_interval: int | None = None  # seconds
    rate_limiting_limit: int | None = None  # requests per interval; 0 or None: no limit
    rate_limiting_technique: str | None = None  # "fixed" (clock-aligned windows) or "sliding"
    retry_max_attempts: int | None = None  # 1-5
    retry_delay: int | None = None  # milliseconds
    retry_backoff: str | None = None  # "constant", "linear" or "exponential"
    log_management: int | None = None  # logs kept at most
    log_management_strategy: str | None = None  # "STOP_INSERTING" or "DELETE_OLDEST"
    authentication: bool = False  # requests need `cf-aig-authorization: Bearer <a wai key>`
    other: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    modified_at: float = 0.0
    declared: bool = False  # in the config file
    internal_id: str = ""  # a uuid made with a stored gateway; declared ones have none

    @property
    def rate_limited(self) -> bool:
        return bool(self.rate_limiting_limit) and bool(self.rate_limiting_interval)


WHAT = "gateways"  # the store's name in its 503
FRESH_S = 1.0  # how long `for_request` trusts its copy of a stored gateway
LAST_OFFSET = 2**62  # past any store's count, within its integers: a page further on is empty

# The gateway's settings, as stored: every field but its identity, its times and where it comes from.
IDENTITY = frozenset({"id", "internal_id", "created_at", "modified_at", "declared"})
SETTINGS = tuple(f.name for f in fields(Gateway) if f.name not in IDENTITY)

SCHEMA = """
CREATE TABLE IF NOT EXISTS gateways (
    id TEXT PRIMARY KEY,
    internal_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    modified_at REAL NOT NULL,
    settings TEXT NOT NULL      -- the gateway's settings by Cloudflare's names, JSON
);
CREATE INDEX IF NOT EXISTS gateways_by_creation ON gateways (created_at, id);
"""
COLUMNS = "id, internal_id, created_at, modified_at, settings"
Row = tuple[str, str, float, float, str]


class GatewayStore(Protocol):
    """Where gateways made through the API are kept: the SQLite file, or the shared database."""

    async def find(self, gateway_id: str) -> Gateway | None: ...

    async def page(self, offset: int, limit: int, search: str, hidden: list[str]) -> tuple[list[Gateway], int]:
        """Up to `limit` gateways whose id holds `search`, from `offset` in creation order, and how
        many there are in all; `hidden` ids (the declared ones, which stand in their place) left out."""
        ...

    async def insert(self, gateway: Gateway) -> bool:
        """False when a gateway with its id is already stored."""
        ...

    async def replace(self, gateway: Gateway) -> Gateway | None:
        """Its settings and modified_at, as the stored gateway's; the gateway now, or None when none is."""
        ...

    async def remove(self, gateway_id: str) -> Gateway | None: ...


class Gateways:
    """The declared gateways and the stored ones, as the gateways API and the gateway URLs see them.

    `for_request` runs on every request through a gateway, so it keeps what it read for `fresh_s`: a
    gateway changed or deleted through another replica (or another front-end process) is seen here up
    to that long after; through this process, at once."""

    def __init__(
        self,
        declared: list[Gateway],
        store: GatewayStore,
        fresh_s: float = FRESH_S,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ):
        self.declared = {gateway.id: gateway for gateway in declared}
        self.store, self.fresh_s, self.clock, self.wall_clock = store, fresh_s, clock, wall_clock
        self._copies: dict[str, tuple[Gateway, float]] = {}  # id -> (gateway, when read)

    async def for_request(self, gateway_id: str) -> Gateway:
        """The gateway a request names; `default` is made on its first use. 404 / 7002 for any other
        that is neither declared nor stored."""
        if gateway_id in self.declared:
            return self.declared[gateway_id]
        now = self.clock()
        copy = self._copies.get(gateway_id)
        if copy is not None and now - copy[1] < self.fresh_s:
            return copy[0]
        gateway = await self.store.find(gateway_id)
        if gateway is None and gateway_id == DEFAULT_GATEWAY:
            gateway = await self._make_default()
        if gateway is None:
            self._copies.pop(gateway_id, None)
            raise errors.gateway_not_found()
        self._copies[gateway_id] = (gateway, now)
        return gateway

    async def _make_default(self) -> Gateway | None:
        # As Cloudflare's: caching off (a TTL of 0), logs on. Replicas making it at once keep one.
        await self.store.insert(self._new(Gateway(DEFAULT_GATEWAY, cache_ttl=0, collect_logs=True)))
        return await self.store.find(DEFAULT_GATEWAY)

    async def list(self, page: int, per_page: int, search: str | None = None) -> tuple[list[Gateway], int]:
        """One page of the gateways whose id holds `search` (the declared first, then the stored by
        creation), and how many there are in all. A page past the last is empty."""
        term = (search or "").lower()
        declared = [gateway for gateway in self.declared.values() if term in gateway.id]
        start = min((page - 1) * per_page, LAST_OFFSET)
        shown = declared[start : start + per_page]
        stored, stored_total = await self.store.page(
            max(0, start - len(declared)), per_page - len(shown), term, list(self.declared)
        )
        return shown + stored, len(declared) + stored_total

    async def get(self, gateway_id: str) -> Gateway:
        if gateway_id in self.declared:
            return self.declared[gateway_id]
        gateway = await self.store.find(gateway_id)
        if gateway is None:
            raise errors.gateway_not_found()
        return gateway

    async def addressable(self, gateway_id: str) -> None:
        """404 / 7002 unless the gateway can be asked for: declared, stored, or `default` (made on its
        first use)."""
        if gateway_id != DEFAULT_GATEWAY:
            await self.get(gateway_id)

    async def create(self, gateway: Gateway) -> Gateway:
        """409 / 7003 when its id is declared or already stored."""
        made = self._new(gateway)
        if gateway.id in self.declared or not await self.store.insert(made):
            raise errors.gateway_exists(gateway.id)
        self._copies.pop(gateway.id, None)
        return made

    async def update(self, gateway_id: str, gateway: Gateway) -> Gateway:
        """Replace a stored gateway's settings; it keeps its creation time."""
        self._not_declared(gateway_id)
        changed = replace(gateway, id=gateway_id, modified_at=self.wall_clock(), declared=False)
        updated = await self.store.replace(changed)
        self._copies.pop(gateway_id, None)
        if updated is None:
            raise errors.gateway_not_found()
        return updated

    async def delete(self, gateway_id: str) -> Gateway:
        """Delete a stored gateway: the gateway it was."""
        self._not_declared(gateway_id)
        deleted = await self.store.remove(gateway_id)
        self._copies.pop(gateway_id, None)
        if deleted is None:
            raise errors.gateway_not_found()
        return deleted

    def _not_declared(self, gateway_id: str) -> None:
        if gateway_id in self.declared:
            raise errors.gateway_read_only(gateway_id)

    def _new(self, gateway: Gateway) -> Gateway:
        now = self.wall_clock()
        return replace(gateway, internal_id=str(uuid.uuid4()), created_at=now, modified_at=now, declared=False)


def build_gateways(settings: Settings, database: Database | None) -> Gateways:
    """The declared gateways, and the others in the shared database when there is one, else in the
    SQLite file of the batch jobs."""
    started = time.time()
    declared = [
        Gateway(**config.model_dump(), created_at=started, modified_at=started, declared=True)
        for config in settings.gateways.declared
    ]
    store: GatewayStore = (
        PostgresGatewayStore(database) if database is not None else SqliteGatewayStore(settings.batch_db_path)
    )
    return Gateways(declared, store)


def settings_json(gateway: Gateway) -> str:
    return json.dumps({name: getattr(gateway, name) for name in SETTINGS})


def gateway_of(row: Row) -> Gateway:
    gateway_id, internal_id, created_at, modified_at, stored = row
    settings = {name: value for name, value in json.loads(stored).items() if name in SETTINGS}
    return Gateway(gateway_id, internal_id=internal_id, created_at=created_at, modified_at=modified_at, **settings)


class SqliteGatewayStore:
    """Its calls are short local transactions, made in the event loop."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    async def find(self, gateway_id: str) -> Gateway | None:
        with closing(self._connect()) as db:
            row = db.execute(f"SELECT {COLUMNS} FROM gateways WHERE id = ?", (gateway_id,)).fetchone()
        return None if row is None else gateway_of(row)

    async def page(self, offset: int, limit: int, search: str, hidden: list[str]) -> tuple[list[Gateway], int]:
        where = f"instr(id, ?) > 0 AND id NOT IN ({', '.join('?' * len(hidden))})"
        with closing(self._connect()) as db:
            rows = db.execute(
                f"SELECT {COLUMNS} FROM gateways WHERE {where} ORDER BY created_at, id LIMIT ? OFFSET ?",
                (search, *hidden, limit, offset),
            ).fetchall()
            (total,) = db.execute(f"SELECT count(*) FROM gateways WHERE {where}", (search, *hidden)).fetchone()
        return [gateway_of(row) for row in rows], total

    async def insert(self, gateway: Gateway) -> bool:
        with closing(self._connect()) as db, db:
            cursor = db.execute(
                f"INSERT OR IGNORE INTO gateways ({COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                (gateway.id, gateway.internal_id, gateway.created_at, gateway.modified_at, settings_json(gateway)),
            )
            return cursor.rowcount > 0

    async def replace(self, gateway: Gateway) -> Gateway | None:
        with closing(self._connect()) as db, db:
            row = db.execute(
                f"UPDATE gateways SET modified_at = ?, settings = ? WHERE id = ? RETURNING {COLUMNS}",
                (gateway.modified_at, settings_json(gateway), gateway.id),
            ).fetchone()
        return None if row is None else gateway_of(row)

    async def remove(self, gateway_id: str) -> Gateway | None:
        with closing(self._connect()) as db, db:
            row = db.execute(f"DELETE FROM gateways WHERE id = ? RETURNING {COLUMNS}", (gateway_id,)).fetchone()
        return None if row is None else gateway_of(row)


class PostgresGatewayStore:
    """The same in `wai_gateways` (migration 0004), shared by every replica."""

    def __init__(self, database: Database):
        self.database = database

    async def find(self, gateway_id: str) -> Gateway | None:
        async with self.database.connection(WHAT, "read") as conn:
            cursor = await conn.execute(f"SELECT {COLUMNS} FROM wai_gateways WHERE id = %s", (gateway_id,))
            row = await cursor.fetchone()
        return None if row is None else gateway_of(row)

    async def page(self, offset: int, limit: int, search: str, hidden: list[str]) -> tuple[list[Gateway], int]:
        where = "strpos(id, %s) > 0 AND NOT (id = ANY(%s::text[]))"
        async with self.database.connection(WHAT, "list") as conn:
            cursor = await conn.execute(
                f"SELECT {COLUMNS} FROM wai_gateways WHERE {where} ORDER BY created_at, id LIMIT %s OFFSET %s",
                (search, hidden, limit, offset),
            )
            rows = await cursor.fetchall()
            cursor = await conn.execute(f"SELECT count(*) FROM wai_gateways WHERE {where}", (search, hidden))
            counted = await cursor.fetchone()
        return [gateway_of(row) for row in rows], counted[0] if counted else 0

    async def insert(self, gateway: Gateway) -> bool:
        async with self.database.connection(WHAT, "create") as conn:
            cursor = await conn.execute(
                f"INSERT INTO wai_gateways ({COLUMNS}) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                (gateway.id, gateway.internal_id, gateway.created_at, gateway.modified_at, settings_json(gateway)),
            )
            return cursor.rowcount > 0

    async def replace(self, gateway: Gateway) -> Gateway | None:
        async with self.database.connection(WHAT, "update") as conn:
            cursor = await conn.execute(
                f"UPDATE wai_gateways SET modified_at = %s, settings = %s WHERE id = %s RETURNING {COLUMNS}",
                (gateway.modified_at, settings_json(gateway), gateway.id),
            )
            row = await cursor.fetchone()
        return None if row is None else gateway_of(row)

    async def remove(self, gateway_id: str) -> Gateway | None:
        async with self.database.connection(WHAT, "delete") as conn:
            cursor = await conn.execute(f"DELETE FROM wai_gateways WHERE id = %s RETURNING {COLUMNS}", (gateway_id,))
            row = await cursor.fetchone()
        return None if row is None else gateway_of(row)
