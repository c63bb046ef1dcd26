"""Fine-tunes shared through the database (`database_url`): replicas on the fake engines, each with its
own `adapters_dir`, see every upload, re-upload and delete made through another one, serve from their
own copies, and keep serving those while the database is down (server/serving/shared_finetunes.py)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest
from safetensors.numpy import save_file

from server.config import Settings
from server.serving.shared_finetunes import shared_copies_dir
from tests.pipeline.requests import ACCOUNT_PATH, CHAT, QUESTION, run
from tests.support.envelopes import openai_body, result, workers_ai_error
from tests.support.fakes import TEXT_MODEL, fake_settings
from tests.support.metrics import scrape
from tests.support.servers import ServedApp, serve_app
from tests.support.stores import postgres_server, until_refused
from tests.support.waiting import wait_for

FINETUNES = f"{ACCOUNT_PATH}/finetunes"
SYNC_S = 0.1  # cluster.finetune_sync_s: the tests wait for a few of them, never for a fixed time
# The fake model's base, as its config.json gives it (a Llama without weights): q_proj is [8, 8].
BASE_CONFIG = {
    "model_type": "llama",
    "hidden_size": 8,
    "intermediate_size": 16,
    "num_attention_heads": 2,
    "num_hidden_layers": 1,
    "vocab_size": 32,
}
Q_PROJ = "base_model.model.model.layers.0.self_attn.q_proj"
SYNC_FAILURES = "wai_store_failures_total"
ADAPTER_CONFIG = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"], "bias": "none"}


# --- replicas ---------------------------------------------------------------------------------


def replica_settings(root: Path, database_url: str) -> Settings:
    """The fake settings with LoRA on the text model, sharing fine-tunes through `database_url`."""
    settings = fake_settings(root, database_url=database_url, cluster={"finetune_sync_s": SYNC_S, "store_timeout_s": 1})
    (root / "weights" / "config.json").write_text(json.dumps(BASE_CONFIG))
    text = settings.models[0]
    settings.models[0] = text.model_copy(update={"lora": text.lora.model_copy(update={"enabled": True})})
    return settings


class Replica:
    """One replica: the app, a client, and where it keeps its copies of the shared fine-tunes."""

    def __init__(self, served: ServedApp, client: httpx.Client, settings: Settings):
        self.served = served
        self.client = client
        self.copies = shared_copies_dir(settings.adapter_store_dir)

    def run(self, lora: str) -> httpx.Response:
        return run(self.client, {"prompt": "Hi", "lora": lora})

    def served_adapter(self, lora: str) -> Any:
        """The adapter a request with `lora` ran with on this replica's engine."""
        result(self.run(lora))
        adapter = self.served.text_engine.last_adapter
        assert adapter is not None
        return adapter

    def copy_of(self, finetune_id: str) -> Path:
        return self.copies / finetune_id


@contextmanager
def replicas(database_url: str, root: Path, count: int) -> Iterator[list[Replica]]:
    with ExitStack() as stack:
        started = []
        for index in range(count):
            settings = replica_settings(root / f"replica-{index}", database_url)
            served = stack.enter_context(serve_app(settings, timeout=30))
            started.append(Replica(served, stack.enter_context(served.client()), settings))
        yield started


@pytest.fixture
def three(postgres, tmp_path) -> Iterator[list[Replica]]:
    with replicas(postgres.new_database(), tmp_path, 3) as started:
        yield started


# --- adapters ---------------------------------------------------------------------------------


def adapter_folder(folder: Path, seed: int = 0, config: dict[str, Any] | None = None) -> Path:
    """A valid rank-2 adapter on the fake base's q_proj; `seed` makes other weights of the same shapes."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps(config or ADAPTER_CONFIG))
    rng = np.random.default_rng(seed)
    save_file(
        {
            f"{Q_PROJ}.lora_A.weight": rng.standard_normal((2, 8)).astype(np.float32),
            f"{Q_PROJ}.lora_B.weight": rng.standard_normal((8, 2)).astype(np.float32),
        },
        folder / "adapter_model.safetensors",
    )
    return folder


def create(client: httpx.Client, name: str) -> dict[str, Any]:
    return result(client.post(FINETUNES, json={"model": TEXT_MODEL, "name": name}))


def upload_file(client: httpx.Client, finetune: str, path: Path) -> httpx.Response:
    with path.open("rb") as file:
        return client.post(
            f"{FINETUNES}/{finetune}/finetune-assets", data={"file_name": path.name}, files={"file": (path.name, file)}
        )


def upload(client: httpx.Client, name: str, folder: Path) -> dict[str, Any]:
    """Create a fine-tune and upload both of its files; the fine-tune as the API shows it."""
    finetune = create(client, name)
    for file_name in ("adapter_config.json", "adapter_model.safetensors"):
        finetune = result(upload_file(client, finetune["id"], folder / file_name))
    return finetune


def stored_files(database_url: str) -> int:
    with psycopg.connect(database_url) as connection:
        return connection.execute("SELECT count(*) FROM wai_finetune_files").fetchone()[0]


# --- one replica's upload, every replica's requests -----------------------------------------------


def test_an_upload_through_one_replica_is_served_by_the_others_from_their_own_copies(three, tmp_path):
    a, b, c = three
    adapter = adapter_folder(tmp_path / "adapter")
    finetune = upload(a.client, "shared-ft", adapter)
    assert not b.copy_of(finetune["id"]).exists()

    served = b.served_adapter("shared-ft")
    copy = b.copy_of(finetune["id"])
    assert served.path == str(copy.resolve()) and served.name == "shared-ft"
    for file_name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (copy / file_name).read_bytes() == (adapter / file_name).read_bytes()

    # OpenAI's `model` may name the fine-tune: C fetches it too, by the same engine id.
    openai_body(c.client.post(CHAT, json={"model": "shared-ft", "messages": QUESTION}))
    on_c = c.served.text_engine.last_adapter
    assert on_c is not None and (on_c.key, on_c.engine_id) == (served.key, served.engine_id)
    assert on_c.path == str(c.copy_of(finetune["id"]).resolve())
    assert [f["name"] for f in result(c.client.get(FINETUNES))] == ["shared-ft"]
    assert result(b.client.get(f"{FINETUNES}/{finetune['id']}")) == finetune


def test_concurrent_first_requests_on_a_replica_fetch_the_files_once(three, tmp_path, caplog):
    a, b, _ = three
    finetune = upload(a.client, "busy-ft", adapter_folder(tmp_path / "adapter"))
    with caplog.at_level(logging.INFO, logger="wai.lora"), ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: b.run("busy-ft"), range(6)))
    assert [answer.status_code for answer in answers] == [200] * 6
    fetches = [r for r in caplog.records if r.getMessage().startswith(f"fetched finetune busy-ft ({finetune['id']})")]
    assert len(fetches) == 1


def test_a_file_is_checked_against_its_partner_in_the_database_before_it_is_stored(three, postgres, tmp_path):
    a, b, _ = three
    adapter = adapter_folder(tmp_path / "adapter")
    finetune = create(a.client, "checked-ft")
    result(upload_file(a.client, finetune["id"], adapter / "adapter_model.safetensors"))
    stored = stored_files(a.served.app.state.settings.database_url)
    # Through another replica: the config says rank 4, the weights in the database are rank 2.
    wrong = adapter_folder(tmp_path / "wrong", config={**ADAPTER_CONFIG, "r": 4})
    message = workers_ai_error(upload_file(b.client, finetune["id"], wrong / "adapter_config.json"), 400, 3042)
    assert "rank 2" in message and "r = 4" in message
    assert stored_files(a.served.app.state.settings.database_url) == stored
    workers_ai_error(b.run("checked-ft"), 400, 3039)  # still without its config


# --- deletes and new files through another replica ------------------------------------------------


def test_a_delete_through_one_replica_is_seen_by_another_within_a_few_syncs(three, tmp_path):
    a, _, c = three
    finetune = upload(a.client, "doomed-ft", adapter_folder(tmp_path / "adapter"))
    a.served_adapter("doomed-ft")
    assert a.copy_of(finetune["id"]).is_dir()

    result(c.client.delete(f"{FINETUNES}/doomed-ft"))
    wait_for(lambda: a.run("doomed-ft").status_code == 400, "the delete to reach replica A")
    workers_ai_error(a.run("doomed-ft"), 400, 3041)
    assert not a.copy_of(finetune["id"]).exists()
    workers_ai_error(a.client.get(f"{FINETUNES}/doomed-ft"), 404, 3041)


def test_new_files_through_one_replica_are_fetched_afresh_by_another(three, tmp_path):
    a, b, _ = three
    finetune = upload(a.client, "changing-ft", adapter_folder(tmp_path / "first"))
    first = b.served_adapter("changing-ft")

    second = adapter_folder(tmp_path / "second", seed=1)
    result(upload_file(a.client, finetune["id"], second / "adapter_model.safetensors"))
    now = wait_for(
        lambda: (adapter := b.served_adapter("changing-ft")).engine_id != first.engine_id and adapter,
        "replica B to serve the new files",
    )
    assert now.key != first.key
    copied = b.copy_of(finetune["id"]) / "adapter_model.safetensors"
    assert copied.read_bytes() == (second / "adapter_model.safetensors").read_bytes()


# --- the database down ------------------------------------------------------------------------


def test_with_the_database_down_copies_are_served_and_everything_else_is_503_until_it_returns(tmp_path):
    with postgres_server() as database, replicas(database.new_database(), tmp_path, 2) as (a, b):
        held = upload(a.client, "held-ft", adapter_folder(tmp_path / "held"))
        upload(a.client, "never-fetched-ft", adapter_folder(tmp_path / "never", seed=1))
        before = b.served_adapter("held-ft")

        database.stop()
        until_refused(database.url())
        for answer in (
            b.client.get(FINETUNES),
            b.client.get(f"{FINETUNES}/held-ft"),
            b.client.post(FINETUNES, json={"model": TEXT_MODEL, "name": "new-ft"}),
            b.client.delete(f"{FINETUNES}/held-ft"),
            upload_file(b.client, held["id"], tmp_path / "held" / "adapter_config.json"),
        ):
            assert "store is unavailable" in workers_ai_error(answer, 503, 3048)
            assert answer.headers["retry-after"] == "5"
        # Many syncs fail meanwhile (each replica's, in this process's one set of metrics): the copy
        # stays, and is served.
        down = scrape(b.client)
        wait_for(lambda: (scrape(b.client) - down).value(SYNC_FAILURES, operation="finetune_sync") >= 3, "syncs")
        assert b.served_adapter("held-ft") == before
        workers_ai_error(b.run("never-fetched-ft"), 503, 3048)

        database.start()
        wait_for(lambda: b.client.get(FINETUNES).status_code == 200, "the fine-tunes API to come back")
        assert b.served_adapter("never-fetched-ft").name == "never-fetched-ft"
        # The sync runs again: a delete through A reaches B.
        result(a.client.delete(f"{FINETUNES}/held-ft"))
        wait_for(lambda: b.run("held-ft").status_code == 400, "the delete to reach replica B")
        assert not b.copy_of(held["id"]).exists()
