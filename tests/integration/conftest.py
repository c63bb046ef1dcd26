import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from transformers import AutoTokenizer

from server.config import load_settings
from server.prepare import resolve_checkpoint
from tests.integration.session import (
    API_KEYS,
    BATCH_MAX_ITEMS,
    BATCH_MAX_PAYLOAD_BYTES,
    BODY_LIMIT,
    SMALL_DRAIN_TIMEOUT_S,
    SMALL_KEYS,
    UPLOAD_LIMIT,
    upload_finetune,
)
from tests.support.repo import DEFAULT_CONFIG, ROOT
from tests.support.servers import RunningServer, start_server, text_only_config


@pytest.fixture(scope="session")
def adapters_dir(tmp_path_factory) -> Path:
    """The fine-tune store the test servers share (never the user's own store in the cache)."""
    return tmp_path_factory.mktemp("adapters")


@pytest.fixture(scope="session")
def test_config(tmp_path_factory) -> Path:
    """configs/default.yaml with a small upload limit, so that the limit can be tested cheaply."""
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["models"][0]["lora"]["max_upload_bytes"] = UPLOAD_LIMIT
    path = tmp_path_factory.mktemp("config") / "test.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="session")
def batch_db(tmp_path_factory) -> Path:
    """The session server's batch jobs (never the user's own file in the cache)."""
    return tmp_path_factory.mktemp("batch") / "batch.sqlite3"


@pytest.fixture(scope="session")
def server(test_config, adapters_dir, batch_db) -> RunningServer:
    """One real server on the default model for the whole session, with two API keys."""
    running = start_server(
        "server",
        config=test_config,
        api_keys=API_KEYS,
        env={
            "WAI_LIMITS__MAX_BODY_BYTES": str(BODY_LIMIT),
            "WAI_ADAPTERS_DIR": str(adapters_dir),
            "WAI_BATCH__DB_PATH": str(batch_db),
            "WAI_BATCH__MAX_ITEMS_PER_JOB": str(BATCH_MAX_ITEMS),
            "WAI_BATCH__MAX_PAYLOAD_BYTES": str(BATCH_MAX_PAYLOAD_BYTES),
        },
    )
    yield running
    running.stop()


@pytest.fixture(scope="session")
def small_servers(tmp_path_factory) -> Iterator[dict[str, RunningServer]]:
    """Where the small server is kept between the modules that use it; stopped at the end."""
    kept: dict[str, RunningServer] = {}
    yield kept
    if "small" in kept:
        kept["small"].stop()


@pytest.fixture
def small_server(small_servers, tmp_path_factory) -> RunningServer:
    """A second server, shared by the modules that need what the session server lacks: the text model
    alone with LoRA off, two running slots (max_num_seqs 2) and four waiting places, so that a flood is
    cheap on a CPU, and the keys of SMALL_KEYS besides "small-key". Started on first use, and again if
    a test stopped it (tests/integration/test_reliability.py drains it last)."""
    running = small_servers.get("small")
    if running is None or running.process.poll() is not None:
        folder = tmp_path_factory.mktemp("small")
        model = {"lora": {"enabled": False}, "queue": {"max_waiting_requests": 4}}
        config = text_only_config(
            folder,
            model=model,
            engine={"max_num_seqs": 2},
            limits={"drain_timeout_s": SMALL_DRAIN_TIMEOUT_S},
            keys=SMALL_KEYS,
        )
        running = small_servers["small"] = start_server(
            "small-server", config=config, api_keys=["small-key"], env={"WAI_ADAPTERS_DIR": str(folder / "adapters")}
        )
    return running


@pytest.fixture(scope="session")
def meow_adapter() -> Path:
    """A real LoRA adapter that makes the default model answer "MEOW MEOW MEOW", trained once and cached."""
    result = subprocess.run(
        [sys.executable, "scripts/train_lora.py"], cwd=ROOT, capture_output=True, text=True, timeout=1800
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def meow(server, meow_adapter) -> dict:
    """The adapter uploaded through the fine-tune API, as `wrangler ai finetune create` does it."""
    with server.client() as client:
        return upload_finetune(client, "meow", meow_adapter)


@pytest.fixture
def client(server: RunningServer):
    with server.client() as c:
        yield c


@pytest.fixture(scope="session")
def tokenizer():
    """The default model's own tokenizer, to count tokens independently of the server."""
    settings = load_settings(DEFAULT_CONFIG)
    return AutoTokenizer.from_pretrained(resolve_checkpoint(settings.models[0], settings.cache_dir))
