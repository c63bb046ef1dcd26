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
    SESSION_LIMITS,
    SMALL_DRAIN_TIMEOUT_S,
    SMALL_KEYS,
    UPLOAD_LIMIT,
    upload_finetune,
)
from tests.support.repo import DEFAULT_CONFIG, ROOT
from tests.support.servers import RunningServer, launch_server, start_server, text_only_config


class SessionServer:
    """The session server: one real server on the default model for the whole session, with two API keys,
    a small upload limit and short connection timeouts (so that both can be tested cheaply), and its own
    fine-tune store and batch jobs (never the user's own in the cache). The store is shared with other
    test servers."""

    def __init__(self, folder: Path):
        self.adapters_dir = folder / "adapters"
        self.batch_db = folder / "batch.sqlite3"
        self.config = folder / "test.yaml"
        config = yaml.safe_load(DEFAULT_CONFIG.read_text())
        config["models"][0]["lora"]["max_upload_bytes"] = UPLOAD_LIMIT
        self.config.write_text(yaml.safe_dump(config))
        self.adapters_dir.mkdir()
        self.running: RunningServer | None = None

    def launch(self) -> RunningServer:
        if self.running is None:
            self.running = launch_server(
                "server",
                config=self.config,
                api_keys=API_KEYS,
                env={
                    "WAI_LIMITS__MAX_BODY_BYTES": str(BODY_LIMIT),
                    "WAI_ADAPTERS_DIR": str(self.adapters_dir),
                    "WAI_BATCH__DB_PATH": str(self.batch_db),
                    "WAI_BATCH__MAX_ITEMS_PER_JOB": str(BATCH_MAX_ITEMS),
                    "WAI_BATCH__MAX_PAYLOAD_BYTES": str(BATCH_MAX_PAYLOAD_BYTES),
                    **{f"WAI_LIMITS__{name.upper()}": str(value) for name, value in SESSION_LIMITS.items()},
                },
            )
        return self.running

    def stop(self) -> None:
        if self.running is not None:
            self.running.stop()


SESSION_SERVER = pytest.StashKey[SessionServer]()


def session_server(config: pytest.Config) -> SessionServer:
    if SESSION_SERVER not in config.stash:
        # The folder tmp_path_factory would give (the fixture is not available to hooks).
        config.stash[SESSION_SERVER] = SessionServer(config._tmp_path_factory.mktemp("session"))
    return config.stash[SESSION_SERVER]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Launch the session server as soon as collection shows a test of this tier needs it: its start-up
    (most of a minute on a small CPU) then overlaps the tiers that run before this one."""
    here = Path(__file__).parent
    needed = any(item.path.is_relative_to(here) and "server" in item.fixturenames for item in session.items)
    if needed and not session.config.option.collectonly:
        session_server(session.config).launch()


def pytest_sessionfinish(session: pytest.Session) -> None:
    if SESSION_SERVER in session.config.stash:  # launched, though perhaps no test got to use it
        session.config.stash[SESSION_SERVER].stop()


@pytest.fixture(scope="session")
def adapters_dir(request) -> Path:
    """The fine-tune store the test servers share (never the user's own store in the cache)."""
    return session_server(request.config).adapters_dir


@pytest.fixture(scope="session")
def server(request) -> Iterator[RunningServer]:
    """The session server (SessionServer), ready."""
    session = session_server(request.config)
    running = session.launch()
    running.wait_until_ready()
    yield running
    session.stop()


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
