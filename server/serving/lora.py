"""The adapter store: LoRA fine-tunes on disk, their metadata, uploads, and lookup for requests.

One folder per fine-tune, named by its uuid (never by anything a client sent), holding
`finetune.json` (metadata), `adapter_config.json` and `adapter_model.safetensors`. Every write goes
to a temporary file in the store and is renamed into place, so a crash or a refused upload never
leaves a half-written file where a reader could see it. A fine-tune is usable as soon as both files
are in and checked together.

The disk is the one source of truth, so that several front-end processes (`wai serve
--api-processes N`) sharing the store see each other's uploads and deletes: each lookup reads the
fine-tune's metadata afresh (a name is looked up through a remembered id, and the folder is read
again when that misses). What must not interleave between processes (a name taken twice, two
adapters given one engine id) happens under a file lock. Each fine-tune's files carry an engine id
in its metadata, handed out from a counter kept in the store and new with every upload, so that
every process asks the engine for the same adapter by the same id, and for new files by a new one.

With `database_url` the fine-tunes live in the database, and a store of this kind holds a replica's
copies of them, each kept or dropped whole (server/serving/shared_finetunes.py).
"""

from __future__ import annotations

import fcntl
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
LOCK = ".lock"  # held while a name is taken or an engine id handed out
LAST_ENGINE_ID = ".last-engine-id"
# Fine-tune ids are uuids the store made; only such a string is ever read as a folder name.
ID_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


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
    # The engine's id for its current files (None until they are stored); not part of the API's view.
    engine_id: int | None = None

    def as_dict(self) -> dict[str, object]:
        shown = asdict(self)
        del shown["engine_id"]
        return shown


@dataclass(frozen=True)
class LoraModel:
    """A served model that takes fine-tunes: its config and the shapes adapters are checked against."""

    config: ModelConfig
    shapes: BaseModelShapes


def new_finetune(lora_model: LoraModel, name: str, description: str, public: bool) -> Finetune:
    """A fine-tune just created: a new id, no files yet."""
    stamp = now()
    return Finetune(
        id=str(uuid.uuid4()),
        name=name,
        model=lora_model.config.name,
        description=description,
        created_at=stamp,
        modified_at=stamp,
        public=public,
    )


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_name(name: str) -> None:
    if not NAME_PATTERN.match(name):
        raise errors.bad_input(
            f"'/name' must match {NAME_PATTERN.pattern} (letters, digits, '.', '-', '_')", param="name"
        )


def check_file_name(file_name: str) -> None:
    if file_name not in ADAPTER_FILES:
        raise errors.invalid_finetune(
            f"file_name must be {ADAPTER_CONFIG} or {ADAPTER_WEIGHTS}, not {file_name!r}; "
            "weights are accepted only as safetensors (no pickled .bin or .pt files)"
        )


def partner_of(file_name: str) -> str:
    """The other of an adapter's two files."""
    return ADAPTER_WEIGHTS if file_name == ADAPTER_CONFIG else ADAPTER_CONFIG


def check_with_partner(lora_model: LoraModel, file_name: str, upload: Path, partner: Path) -> None:
    """Check an uploaded file alone, then with its partner where that is in (reads files: call it
    off the event loop)."""
    config_path = upload if file_name == ADAPTER_CONFIG else partner
    weights_path = upload if file_name == ADAPTER_WEIGHTS else partner
    config = None
    if config_path.is_file():
        config = check_config(config_path.read_bytes(), lora_model.shapes, lora_model.config.lora.max_rank)
    if weights_path.is_file():
        check_weights(weights_path, lora_model.shapes, config)


def clear_leftovers(root: Path) -> None:
    """Remove what an interrupted upload or delete left behind: once, before any process serves the store."""
    root.mkdir(parents=True, exist_ok=True)
    for leftover in (UPLOADS, TRASH):
        shutil.rmtree(root / leftover, ignore_errors=True)
        (root / leftover).mkdir()


class AdapterStore:
    def __init__(
        self,
        root: Path,
        models: list[ModelConfig],
        shapes: dict[str, BaseModelShapes],
        clear_at_start: bool = True,
    ):
        """`models`: every served model (to tell "no such model" from "LoRA off");
        `shapes`: the base shapes of each LoRA-enabled one, by its canonical name;
        `clear_at_start`: False in a front end of several, whose supervisor cleared the store before."""
        self.root = root
        self._by_served_name = {name: model for model in models for name in model.served_names}
        self._lora_models = {name: LoraModel(self._by_served_name[name], shape) for name, shape in shapes.items()}
        if clear_at_start:
            clear_leftovers(root)
        for folder in (root / UPLOADS, root / TRASH):
            folder.mkdir(parents=True, exist_ok=True)
        self._ids_by_name: dict[str, str] = {}  # a hint only: every lookup checks it on disk
        self._read_all()

    # --- the management API ---------------------------------------------------------------

    def create(self, model: str, name: str, description: str = "", public: bool = False) -> Finetune:
        lora_model = self.lora_model(model)
        check_name(name)
        with self._locked():
            if self.find(name) is not None:
                raise errors.finetune_name_taken(name)
            finetune = new_finetune(lora_model, name, description, public)
            folder = self._folder(finetune.id)
            folder.mkdir()
            self._write_metadata(finetune)
        self._ids_by_name[finetune.name] = finetune.id
        log.info("created finetune %s (%s) for %s", finetune.name, finetune.id, finetune.model)
        return finetune

    def finetunes(self, public_only: bool = False) -> list[Finetune]:
        finetunes = [f for f in self._read_all() if f.public or not public_only]
        return sorted(finetunes, key=lambda f: (f.created_at, f.name))

    def get(self, id_or_name: str) -> Finetune:
        finetune = self.find(id_or_name)
        if finetune is None:
            raise errors.finetune_not_found(id_or_name)
        return finetune

    def delete(self, id_or_name: str) -> Finetune:
        finetune = self.get(id_or_name)
        # One rename takes it out of sight; removing the files after cannot leave it half there.
        trashed = self.root / TRASH / finetune.id
        try:
            os.replace(self._folder(finetune.id), trashed)
        except FileNotFoundError:  # another process deleted it just now
            raise errors.finetune_not_found(id_or_name) from None
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
        check_file_name(file_name)
        folder = self._folder(finetune.id)
        check_with_partner(self.lora_model(finetune.model), file_name, upload, folder / partner_of(file_name))
        with self._locked():  # the new file and its new engine id, together: the engine loads it afresh
            if not folder.is_dir():  # deleted meanwhile, by another process
                raise errors.finetune_not_found(id_or_name)
            os.replace(upload, folder / file_name)
            finetune.modified_at = now()
            finetune.engine_id = self._next_engine_id()
            self._write_metadata(finetune)
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
        finetune = self.find(lora)
        if finetune is None or finetune.model != lora_model.config.name:
            raise errors.unknown_adapter(lora, model)
        folder = self._folder(finetune.id)
        if not all((folder / name).is_file() for name in ADAPTER_FILES):
            raise errors.finetune_missing_files()
        engine_id = finetune.engine_id if finetune.engine_id is not None else self._number(finetune)
        return Adapter(key=f"{finetune.id}@{engine_id}", engine_id=engine_id, path=str(folder), name=finetune.name)

    # --- a replica's copies of the shared store (server/serving/shared_finetunes.py) ----------

    @contextmanager
    def staging_folder(self) -> Iterator[Path]:
        """An empty folder in the store to gather a fine-tune's files in; gone afterwards unless kept."""
        folder = Path(tempfile.mkdtemp(dir=self.root / UPLOADS))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def keep_copy(self, finetune: Finetune, staged: Path) -> None:
        """Put a fine-tune's files, gathered in `staged`, in place as its folder, in one rename; an
        older copy (another engine id) goes. Another process that kept the same copy first wins."""
        with tempfile.NamedTemporaryFile("w", dir=staged, delete=False) as file:
            json.dump(asdict(finetune), file, indent=2)
        os.replace(file.name, staged / METADATA)
        with self._locked():
            current = self._read(finetune.id)
            if current is not None and current.engine_id == finetune.engine_id:
                return
            if self._folder(finetune.id).exists():
                self._trash(finetune.id)
            os.replace(staged, self._folder(finetune.id))
        self._ids_by_name[finetune.name] = finetune.id

    def drop_copy(self, finetune_id: str, engine_id: int | None) -> bool:
        """Remove the copy of a fine-tune's files with that engine id; a newer copy stays."""
        with self._locked():
            current = self._read(finetune_id)
            if current is None or current.engine_id != engine_id:
                return False
            self._trash(finetune_id)
        return True

    def _trash(self, finetune_id: str) -> None:
        trashed = Path(tempfile.mkdtemp(dir=self.root / TRASH))
        os.replace(self._folder(finetune_id), trashed / finetune_id)
        shutil.rmtree(trashed, ignore_errors=True)

    # --- disk -----------------------------------------------------------------------------

    def _folder(self, finetune_id: str) -> Path:
        folder = (self.root / finetune_id).resolve()
        if folder.parent != self.root.resolve():  # ids are uuids we made; refuse anything else
            raise errors.finetune_not_found(finetune_id)
        return folder

    def _read(self, finetune_id: str) -> Finetune | None:
        """The fine-tune's metadata as it is on disk now; None once it is gone (or never was)."""
        try:
            return Finetune(**json.loads((self.root / finetune_id / METADATA).read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError):
            log.warning("skipping unreadable finetune metadata of %s", finetune_id)
            return None

    def _read_all(self) -> list[Finetune]:
        finetunes = []
        for metadata in self.root.glob(f"[!.]*/{METADATA}"):
            if ID_PATTERN.match(metadata.parent.name) and (finetune := self._read(metadata.parent.name)) is not None:
                finetunes.append(finetune)
        self._ids_by_name = {finetune.name: finetune.id for finetune in finetunes}
        return finetunes

    def find(self, id_or_name: str) -> Finetune | None:
        """A fine-tune with that id or name, whatever its state; None if there is none. By id, or by
        name through the id last seen for it; the whole folder is read again only when that misses
        (the name is new, or went to another fine-tune in another process)."""
        if ID_PATTERN.match(id_or_name) and (found := self._read(id_or_name)) is not None:
            return found
        known = self._ids_by_name.get(id_or_name)
        if known is not None and (found := self._read(known)) is not None and found.name == id_or_name:
            return found
        return next((f for f in self._read_all() if f.name == id_or_name), None)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive across every process sharing the store, for a few file operations at most."""
        with (self.root / LOCK).open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield  # closing the file releases the lock

    def _next_engine_id(self) -> int:
        """A positive int never handed out before in this store (call it under the lock)."""
        counter = self.root / LAST_ENGINE_ID
        try:
            last = int(counter.read_text())
        except (FileNotFoundError, ValueError):  # a new store, or one from before the counter
            last = max((f.engine_id or 0 for f in self._read_all()), default=0)
        with tempfile.NamedTemporaryFile("w", dir=self.root / UPLOADS, delete=False) as file:
            file.write(str(last + 1))
        os.replace(file.name, counter)
        return last + 1

    def _number(self, finetune: Finetune) -> int:
        """An engine id for files that came without one (put in by hand, or by a wai from before ids
        were kept); the first process to need it gives it, the others read it."""
        with self._locked():
            current = self._read(finetune.id)
            if current is None:
                raise errors.unknown_adapter(finetune.name, finetune.model)
            if current.engine_id is None:
                current.engine_id = self._next_engine_id()
                self._write_metadata(current)
            return current.engine_id

    def _write_metadata(self, finetune: Finetune) -> None:
        folder = self._folder(finetune.id)
        with tempfile.NamedTemporaryFile("w", dir=self.root / UPLOADS, delete=False) as file:
            json.dump(asdict(finetune), file, indent=2)  # the engine id too
        os.replace(file.name, folder / METADATA)
