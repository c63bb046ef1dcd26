"""Fine-tunes as the management API and the text services use them, wherever they are kept.

`Finetunes` is the one interface: without `database_url`, `LocalFinetunes` over this process's
adapter store (server/serving/lora.py), exactly as a single server always kept them; with it,
`SharedFinetunes` (server/serving/shared_finetunes.py), every replica's registry and files in the
shared database, each replica serving from its own local copies.
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO, Protocol

from server.config import Settings
from server.engine.types import Adapter
from server.serving.lora import AdapterStore, Finetune, LoraModel
from server.serving.lora_checks import BaseModelShapes
from server.serving.shared_finetunes import SharedFinetunes, shared_copies_dir
from server.stores.finetunes import FinetuneStore
from server.stores.postgres import Database


class Finetunes(Protocol):
    def lora_model(self, model: str) -> LoraModel:
        """The model a fine-tune is for: 5007 when it is not served, 405 / 5005 when LoRA is off."""
        ...

    async def create(self, model: str, name: str, description: str = "", public: bool = False) -> Finetune: ...

    async def finetunes(self, public_only: bool = False) -> list[Finetune]: ...

    async def get(self, id_or_name: str) -> Finetune: ...

    async def delete(self, id_or_name: str) -> Finetune: ...

    def upload_file(self) -> AbstractContextManager[tuple[BinaryIO, Path]]:
        """A local temporary file for an incoming asset; gone afterwards unless added."""
        ...

    async def add_asset(self, id_or_name: str, file_name: str, upload: Path) -> Finetune:
        """Check an uploaded file (alone, then with its partner if that is in), then keep it."""
        ...

    async def adapter_for(self, model: str, lora: str) -> Adapter:
        """The adapter a request's `lora` (a fine-tune's name or id) means on `model`, on local disk."""
        ...

    async def find(self, id_or_name: str) -> Finetune | None: ...

    def start(self) -> None:
        """Begin what runs in the background (with the app's lifespan)."""
        ...

    async def stop(self) -> None: ...


class LocalFinetunes:
    """The fine-tunes of one server (or of the front ends of one `wai serve`), in its adapter store."""

    def __init__(self, store: AdapterStore):
        self.store = store

    def lora_model(self, model: str) -> LoraModel:
        return self.store.lora_model(model)

    async def create(self, model: str, name: str, description: str = "", public: bool = False) -> Finetune:
        return self.store.create(model, name, description, public)

    async def finetunes(self, public_only: bool = False) -> list[Finetune]:
        return self.store.finetunes(public_only)

    async def get(self, id_or_name: str) -> Finetune:
        return self.store.get(id_or_name)

    async def delete(self, id_or_name: str) -> Finetune:
        return self.store.delete(id_or_name)

    def upload_file(self) -> AbstractContextManager[tuple[BinaryIO, Path]]:
        return self.store.upload_file()

    async def add_asset(self, id_or_name: str, file_name: str, upload: Path) -> Finetune:
        # Checking reads the safetensors header and the base model's shapes: off the event loop.
        return await asyncio.to_thread(self.store.add_asset, id_or_name, file_name, upload)

    async def adapter_for(self, model: str, lora: str) -> Adapter:
        return self.store.adapter_for(model, lora)

    async def find(self, id_or_name: str) -> Finetune | None:
        return self.store.find(id_or_name)

    def start(self) -> None:
        pass  # the disk is read afresh on every lookup: nothing to keep in step

    async def stop(self) -> None:
        pass


def build_finetunes(
    settings: Settings, shapes: dict[str, BaseModelShapes], database: Database | None, clear_at_start: bool
) -> Finetunes:
    """The fine-tunes of this server: in the shared database when there is one, else in `adapters_dir`.
    `shapes`: the base shapes of each LoRA-enabled model; `clear_at_start`: False in a front end of
    several, whose supervisor cleared the store before."""
    if database is None:
        return LocalFinetunes(AdapterStore(settings.adapter_store_dir, settings.models, shapes, clear_at_start))
    copies = AdapterStore(shared_copies_dir(settings.adapter_store_dir), settings.models, shapes, clear_at_start)
    return SharedFinetunes(copies, FinetuneStore(database), settings.cluster.finetune_sync_s)
