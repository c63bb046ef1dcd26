"""Fine-tunes shared by every replica (`database_url`), served from each replica's local copies.

The registry and the files are in the database (server/stores/finetunes.py). The engine loads an
adapter from a local folder, so a replica serves a fine-tune from its own copy, kept by an adapter
store (server/serving/lora.py) under `adapters_dir/database-copies`, apart from the fine-tunes a
server made without a database. A request naming a fine-tune this replica has no copy of (or an
older one) looks it up in the database and fetches both files, once however many requests wait for
them. A background sync reads the registry every `cluster.finetune_sync_s` and removes the copies
of fine-tunes deleted, or given new files, through any replica, so a delete elsewhere is seen
within that interval.

The database unreachable: the management calls answer 503 / 3048, while a fine-tune this replica
already holds keeps being served from its copy (the sync keeps every copy until the database
answers again); one it never fetched gets the 503.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AbstractContextManager
from dataclasses import asdict
from pathlib import Path
from typing import BinaryIO
from weakref import WeakValueDictionary

from server import errors
from server.engine.types import Adapter
from server.serving.lora import (
    AdapterStore,
    Finetune,
    LoraModel,
    check_file_name,
    check_name,
    check_with_partner,
    new_finetune,
    now,
    partner_of,
)
from server.serving.lora_checks import ADAPTER_FILES
from server.stores.finetunes import FinetuneStore, StoredFinetune

log = logging.getLogger("wai.lora")

COPIES = "database-copies"  # under adapters_dir


def as_finetune(row: StoredFinetune) -> Finetune:
    return Finetune(**asdict(row))


class SharedFinetunes:
    def __init__(self, copies: AdapterStore, store: FinetuneStore, sync_s: float):
        """`copies`: this replica's local copies; `store`: the registry and files every replica shares."""
        self.copies = copies
        self.store = store
        self.sync_s = sync_s
        # Each fine-tune's engine id as the registry had it at the last sync or fetch: a copy with
        # another is out of date.
        self._engine_ids: dict[str, int | None] = {}
        self._fetching: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()
        self._syncing: asyncio.Task[None] | None = None

    # --- the management API ---------------------------------------------------------------

    def lora_model(self, model: str) -> LoraModel:
        return self.copies.lora_model(model)

    async def create(self, model: str, name: str, description: str = "", public: bool = False) -> Finetune:
        lora_model = self.lora_model(model)
        check_name(name)
        row = StoredFinetune(**asdict(new_finetune(lora_model, name, description, public)))
        finetune = as_finetune(await self.store.create(row))
        log.info("created finetune %s (%s) for %s", finetune.name, finetune.id, finetune.model)
        return finetune

    async def finetunes(self, public_only: bool = False) -> list[Finetune]:
        return [as_finetune(row) for row in await self.store.finetunes(public_only)]

    async def get(self, id_or_name: str) -> Finetune:
        row = await self.store.find(id_or_name)
        if row is None:
            raise errors.finetune_not_found(id_or_name)
        return as_finetune(row)

    async def delete(self, id_or_name: str) -> Finetune:
        row = await self.store.delete(id_or_name)
        if row is None:
            raise errors.finetune_not_found(id_or_name)
        # This replica refuses it at once; the others at their next sync.
        self._engine_ids.pop(row.id, None)
        await self._drop_copy(row.id)
        log.info("deleted finetune %s (%s)", row.name, row.id)
        return as_finetune(row)

    def upload_file(self) -> AbstractContextManager[tuple[BinaryIO, Path]]:
        return self.copies.upload_file()

    async def add_asset(self, id_or_name: str, file_name: str, upload: Path) -> Finetune:
        """Check the uploaded file here, with its partner fetched if that is in, and only then store it."""
        finetune = await self.get(id_or_name)
        check_file_name(file_name)
        lora_model = self.lora_model(finetune.model)
        partner = partner_of(file_name)
        with self.copies.staging_folder() as staged:
            if await self.store.fetch(finetune.id, staged, (partner,)) is None:
                raise errors.finetune_not_found(id_or_name)
            # Checking reads the safetensors header and the base model's shapes: off the event loop.
            await asyncio.to_thread(check_with_partner, lora_model, file_name, upload, staged / partner)
        row = await self.store.store_file(finetune.id, file_name, upload, now())
        if row is None:  # deleted meanwhile, through another replica
            raise errors.finetune_not_found(id_or_name)
        self._engine_ids[row.id] = row.engine_id
        log.info("finetune %s: stored %s", row.name, file_name)
        return as_finetune(row)

    # --- requests -------------------------------------------------------------------------

    async def adapter_for(self, model: str, lora: str) -> Adapter:
        lora_model = self.lora_model(model)
        finetune = self._current_copy(lora) or await self._fetched(lora)
        if finetune is None or finetune.model != lora_model.config.name:
            raise errors.unknown_adapter(lora, model)
        if self.copies.find(finetune.id) is None:  # only a fine-tune with both files has a copy
            raise errors.finetune_missing_files()
        return self.copies.adapter_for(model, finetune.id)

    async def find(self, id_or_name: str) -> Finetune | None:
        copy = self._current_copy(id_or_name)
        if copy is not None:
            return copy
        row = await self.store.find(id_or_name)
        return as_finetune(row) if row is not None else None

    def _current_copy(self, id_or_name: str) -> Finetune | None:
        """This replica's copy of the fine-tune, unless the registry has newer files for it."""
        copy = self.copies.find(id_or_name)
        if copy is None or self._engine_ids.get(copy.id, copy.engine_id) != copy.engine_id:
            return None
        return copy

    async def _fetched(self, id_or_name: str) -> Finetune | None:
        """The fine-tune as the registry has it now, with a local copy of its files once both are in;
        None when there is no such fine-tune."""
        row = await self.store.find(id_or_name)
        if row is None:
            return None
        async with self._fetch_lock(row.id):
            copy = self.copies.find(row.id)
            if copy is not None and copy.engine_id == row.engine_id:  # fetched by a request waited for
                self._engine_ids[row.id] = row.engine_id
                return copy
            with self.copies.staging_folder() as staged:
                fetched = await self.store.fetch(row.id, staged, ADAPTER_FILES)
                if fetched is None:  # deleted meanwhile
                    return None
                row, files = fetched
                finetune = as_finetune(row)
                if len(files) == len(ADAPTER_FILES):
                    await asyncio.to_thread(self.copies.keep_copy, finetune, staged)
                    log.info("fetched finetune %s (%s), engine id %s", row.name, row.id, row.engine_id)
            self._engine_ids[row.id] = row.engine_id
            return finetune

    def _fetch_lock(self, finetune_id: str) -> asyncio.Lock:
        """One fetch of a fine-tune's files at a time; the lock lives while someone holds or awaits it."""
        lock = self._fetching.get(finetune_id)
        if lock is None:
            lock = self._fetching[finetune_id] = asyncio.Lock()
        return lock

    async def _drop_copy(self, finetune_id: str, engine_id: int | None = None) -> bool:
        """Remove this replica's copy of a fine-tune (with `engine_id`: only a copy of those files)."""
        async with self._fetch_lock(finetune_id):
            copy = self.copies.find(finetune_id)
            if copy is None or (engine_id is not None and copy.engine_id != engine_id):
                return False
            return await asyncio.to_thread(self.copies.drop_copy, finetune_id, copy.engine_id)

    # --- keeping the copies in step --------------------------------------------------------

    def start(self) -> None:
        self._syncing = asyncio.create_task(self._sync_forever(), name="wai-finetune-sync")

    async def stop(self) -> None:
        if self._syncing is not None:
            self._syncing.cancel()
            await asyncio.gather(self._syncing, return_exceptions=True)

    async def _sync_forever(self) -> None:
        while True:
            try:
                await self.sync()
            except errors.WaiError:
                pass  # the database is unreachable (logged by it): every copy stays, and is served meanwhile
            except Exception:
                log.exception("syncing the fine-tunes failed; trying again in %.0f s", self.sync_s)
            await asyncio.sleep(self.sync_s)

    async def sync(self) -> None:
        """Remove the copies of fine-tunes deleted, or given new files, through any replica."""
        # The copies are listed before the registry is read: one fetched meanwhile is newer than it.
        held = await asyncio.to_thread(self.copies.finetunes)
        registry = await self.store.engine_ids()
        self._engine_ids = registry
        for copy in held:
            if copy.id not in registry or registry[copy.id] != copy.engine_id:
                if await self._drop_copy(copy.id, copy.engine_id):
                    log.info("finetune %s (%s): removed this replica's out-of-date copy", copy.name, copy.id)


def shared_copies_dir(adapters_dir: Path) -> Path:
    """Where a replica keeps its copies of the shared fine-tunes."""
    return adapters_dir / COPIES
