"""The shared stores a replica was given (`database_url`, `redis_url`), opened and closed with the app."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from server.config import Settings
from server.stores.postgres import Database
from server.stores.redis import Redis


@dataclass
class SharedStores:
    database: Database | None = None
    redis: Redis | None = None

    @classmethod
    def configured(cls, settings: Settings) -> SharedStores:
        timeout_s = settings.cluster.store_timeout_s
        return cls(
            database=Database(settings.database_url, timeout_s) if settings.database_url else None,
            redis=Redis(settings.redis_url, timeout_s) if settings.redis_url else None,
        )

    async def open(self) -> None:
        if self.database is not None:
            await self.database.open()

    async def close(self) -> None:
        if self.database is not None:
            await self.database.close()
        if self.redis is not None:
            await self.redis.close()

    async def health(self) -> dict[str, str]:
        """`up` or `down` for each store configured, as /readyz shows it."""
        checks = {}
        if self.database is not None:
            checks["postgres"] = self.database.ping()
        if self.redis is not None:
            checks["redis"] = self.redis.ping()
        answers = await asyncio.gather(*checks.values())
        return {store: "up" if up else "down" for store, up in zip(checks, answers, strict=True)}
