"""The adapter store: LoRA fine-tunes on disk, their metadata, uploads, and lookup for requests.

One folder per fine-tune, named by its uuid (never by anything a client sent), holding
`finetune.json` (metadata), `adapter_config.json` and `adapter_model.safetensors`. Every write goes
to a temporary file in the store and is renamed into place, so a crash or a refused upload never
leaves a half-written file where a reader could see it. A fine-tune is usable as soon as both files
are in and checked together. The store's index is read from disk once, at start (so it survives
restarts), and kept in memory after: every write goes to both.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from server import errors
from server.config import ModelConfig
from server.engine.types import Adapter
from server.serving.lora_checks import (
    ADAPTER_CONFIG,
    ADAPTER_FILES,
    ADAPTER_WEIGHTS,
    BaseModelShapes,
    check_config,
    check_weights,
)

log = logging.getLogger("wai.lora")

METADATA = "finetune.json"
# Letters, digits, dot, dash, underscore; no leading dot, so a name is never a path or a hidden file.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
UPLOADS = ".uploads"  # temporary files, on the store's filesystem so that rename is atomic
TRASH = ".trash"  # fine-tunes being deleted


@dataclass
class Finetune:
    """A fine-tune as the management API shows it (Cloudflare's fields)."""

    id: str
    name: str
    model: str
    description: str
    created_at: str
    modified_at: str
    public: bool = False

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class LoraModel:
    """A served model that takes fine-tunes: its config and the shapes adapters are checked against."""

    config: ModelConfig
    shapes: BaseModelShapes


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AdapterStore:
    def __init__(self, root: Path, models: list[ModelConfig], shapes: dict[str, BaseModelShapes]):
        """`models`: every served model (to tell "no such model" from "LoRA off");
        `shapes`: the base shapes of each LoRA-enabled one, by its canonical name."""
        self.root = root
        self._by_served_name = {name: model for model in models for name in model.served_names}
        self._lora_models = {name: LoraModel(self._by_served_name[name], shape) for name, shape in shapes.items()}
        # vLLM wants a positive int per adapter; ids are handed out per process, never reused.
        self._engine_ids: dict[str, int] = {}
        self._last_engine_id = 0
        root.mkdir(parents=True, exist_ok=True)
        for leftover in (UPLOADS, TRASH):  # what an interrupted upload or delete left behind
            shutil.rmtree(root / leftover, ignore_errors=True)
            (root / leftover).mkdir()
        self._finetunes = {finetune.id: finetune for finetune in self._read_all()}

    # --- the management API ---------------------------------------------------------------

    def create(self, model: str, name: str, description: str = "", public: bool = False) -> Finetune:
        lora_model = self.lora_model(model)
        if not NAME_PATTERN.match(name):
            raise errors.bad_input(
                f"'/name' must match {NAME_PATTERN.pattern} (letters, digits, '.', '-', '_')", param="name"
            )
        if self._find(name) is not None:
            raise errors.finetune_name_taken(name)
        stamp = now()
        finetune = Finetune(
            id=str(uuid.uuid4()),
            name=name,
            model=lora_model.config.name,
            description=description,
            created_at=stamp,
            modified_at=stamp,
            public=public,
        )
        folder = self._folder(finetune.id)
        folder.mkdir()
        self._write_metadata(finetune)
        self._finetunes[finetune.id] = finetune
        log.info("created finetune %s (%s) for %s", finetune.name, finetune.id, finetune.model)
        return finetune

    def finetunes(self, public_only: bool = False) -> list[Finetune]:
        finetunes = [f for f in self._finetunes.values() if f.public or not public_only]
        return sorted(finetunes, key=lambda f: (f.created_at, f.name))

    def get(self, id_or_name: str) -> Finetune:
        finetune = self._find(id_or_name)
        if finetune is None:
            raise errors.finetune_not_found(id_or_name)
        return finetune

    def delete(self, id_or_name: str) -> Finetune:
        finetune = self.get(id_or_name)
        # One rename takes it out of sight; removing the files after cannot leave it half there.
        trashed = self.root / TRASH / finetune.id
        os.replace(self._folder(finetune.id), trashed)
        del self._finetunes[finetune.id]
        shutil.rmtree(trashed, ignore_errors=True)
        log.info("deleted finetune %s (%s)", finetune.name, finetune.id)
        return finetune

    @contextmanager
    def upload_file(self) -> Iterator[tuple[BinaryIO, Path]]:
        """A temporary file in the store for an incoming asset; gone afterwards unless added."""
        handle, name = tempfile.mkstemp(dir=self.root / UPLOADS)
        path = Path(name)
        try:
            with os.fdopen(handle, "wb") as file:
                yield file, path
        finally:
            path.unlink(missing_ok=True)

    def add_asset(self, id_or_name: str, file_name: str, upload: Path) -> Finetune:
        """Check an uploaded file (alone, then with its partner if that is in) and move it into place."""
        finetune = self.get(id_or_name)
        if file_name not in ADAPTER_FILES:
            raise errors.invalid_finetune(
                f"file_name must be {ADAPTER_CONFIG} or {ADAPTER_WEIGHTS}, not {file_name!r}; "
                "weights are accepted only as safetensors (no pickled .bin or .pt files)"
            )
        lora_model = self.lora_model(finetune.model)
        folder = self._folder(finetune.id)
        config_path = upload if file_name == ADAPTER_CONFIG else folder / ADAPTER_CONFIG
        weights_path = upload if file_name == ADAPTER_WEIGHTS else folder / ADAPTER_WEIGHTS
        config = None
        if config_path.is_file():
            config = check_config(config_path.read_bytes(), lora_model.shapes, lora_model.config.lora.max_rank)
        if weights_path.is_file():
            check_weights(weights_path, lora_model.shapes, config)
        os.replace(upload, folder / file_name)
        finetune.modified_at = now()
        self._write_metadata(finetune)
        self._engine_ids.pop(finetune.id, None)  # new weights: the engine must load them afresh
        log.info("finetune %s: stored %s", finetune.name, file_name)
        return finetune

    # --- requests -------------------------------------------------------------------------

    def lora_model(self, model: str) -> LoraModel:
        """The model a fine-tune is for: 5007 when it is not served, 405 / 5005 when LoRA is off."""
        config = self._by_served_name.get(model)
        if config is None:
            raise errors.unknown_model(model)
        lora_model = self._lora_models.get(config.name)
        if lora_model is None:
            raise errors.lora_not_supported(model)
        return lora_model

    def adapter_for(self, model: str, lora: str) -> Adapter:
        """The adapter a request's `lora` (a fine-tune's name or id) means on `model`."""
        lora_model = self.lora_model(model)
        finetune = self._find(lora)
        if finetune is None or finetune.model != lora_model.config.name:
            raise errors.unknown_adapter(lora, model)
        folder = self._folder(finetune.id)
        if not all((folder / name).is_file() for name in ADAPTER_FILES):
            raise errors.finetune_missing_files()
        if finetune.id not in self._engine_ids:
            self._last_engine_id += 1
            self._engine_ids[finetune.id] = self._last_engine_id
        engine_id = self._engine_ids[finetune.id]
        return Adapter(key=f"{finetune.id}@{engine_id}", engine_id=engine_id, path=str(folder), name=finetune.name)

    def find_by_name(self, name: str) -> Finetune | None:
        """A fine-tune called `name` (or with that id), whatever its state; None if there is none."""
        return self._find(name)

    # --- disk -----------------------------------------------------------------------------

    def _folder(self, finetune_id: str) -> Path:
        folder = (self.root / finetune_id).resolve()
        if folder.parent != self.root.resolve():  # ids are uuids we made; refuse anything else
            raise errors.finetune_not_found(finetune_id)
        return folder

    def _read_all(self) -> list[Finetune]:
        finetunes = []
        for metadata in self.root.glob(f"[!.]*/{METADATA}"):
            try:
                finetunes.append(Finetune(**json.loads(metadata.read_text())))
            except (OSError, ValueError, TypeError):
                log.warning("skipping unreadable finetune metadata %s", metadata)
        return finetunes

    def _find(self, id_or_name: str) -> Finetune | None:
        found = self._finetunes.get(id_or_name)
        return found or next((f for f in self._finetunes.values() if f.name == id_or_name), None)

    def _write_metadata(self, finetune: Finetune) -> None:
        folder = self._folder(finetune.id)
        with tempfile.NamedTemporaryFile("w", dir=self.root / UPLOADS, delete=False) as file:
            json.dump(finetune.as_dict(), file, indent=2)
        os.replace(file.name, folder / METADATA)
