import functools
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from transformers import AutoTokenizer

from server.config import load_settings
from server.prepare import resolve_checkpoint
from tests.integration.cluster import CLUSTER, Cluster, ClusterLaunch
from tests.integration.session import (
    API_KEYS,
    BATCH_MAX_ITEMS,
    BATCH_MAX_PAYLOAD_BYTES,
    BODY_LIMIT,
    LLAMA3,
    SESSION_LIMITS,
    SMALL,
    TWO_FRONT_ENDS,
    UPLOAD_LIMIT,
    upload_finetune,
)
from tests.support.early import after_early_commands
from tests.support.repo import DEFAULT_CONFIG, ROOT
from tests.support.servers import Prelaunched, RunningServer, launch_server


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
        self._lock = threading.Lock()

    def launch(self) -> RunningServer:
        with self._lock:
            return self._launch_once()

    def _launch_once(self) -> RunningServer:
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


def needs(item: pytest.Item) -> list[Prelaunched | ClusterLaunch]:
    """The prelaunched servers a test uses (by its fixtures, or the module that defines them)."""
    found: list[Prelaunched | ClusterLaunch] = [SMALL] if "small_server" in item.fixturenames else []
    found += [TWO_FRONT_ENDS] if item.path.name == "test_api_processes.py" and "server" in item.fixturenames else []
    found += [CLUSTER] if "cluster" in item.fixturenames else []
    return found + ([LLAMA3] if "llama3" in item.fixturenames else [])


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """The cluster test first in this tier: its three replicas, started early, are stopped once it is
    done (tests/integration/test_cluster.py), before the modules that start servers of their own."""
    here = Path(__file__).parent
    mine = [i for i, item in enumerate(items) if item.path.is_relative_to(here)]
    if not mine:
        return
    tier = items[mine[0] : mine[-1] + 1]
    tier.sort(key=lambda item: item.path.name != "test_cluster.py")  # stable: the rest keep their order
    items[mine[0] : mine[-1] + 1] = tier


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the session server at once if this tier's selected tests use it (its two engines take the
    longest, and the first of this tier's tests need it), and ask for the other servers they use to start
    once the early commands have run (tests/support/early.py). Their start-ups then overlap the tiers that
    run before this one. With the cluster test selected, its replicas start then, alone, and the others
    once that test is done (tests/integration/cluster.py)."""
    if session.config.option.collectonly:
        return
    here = Path(__file__).parent
    mine = [item for item in session.items if item.path.is_relative_to(here)]
    if any("server" in item.fixturenames and item.path.name != "test_api_processes.py" for item in mine):
        session_server(session.config).launch()
    folders = session.config._tmp_path_factory
    servers = dict.fromkeys(found for item in mine for found in needs(item))
    if CLUSTER in servers:  # the cluster first, alone; the others once its test stopped it
        after_early_commands(functools.partial(CLUSTER.launch, folders))
        # One at a time, each ready before the next starts: the first a test needs (the two-front-end
        # server's module comes early) starts on its own instead of sharing the cores with all of them.
        CLUSTER.after_stop([functools.partial(server.ready, folders) for server in servers if server is not CLUSTER])
        return
    for server in servers:
        after_early_commands(functools.partial(server.launch, folders))


def pytest_sessionfinish(session: pytest.Session) -> None:
    if SESSION_SERVER in session.config.stash:  # launched, though perhaps no test got to use it
        session.config.stash[SESSION_SERVER].stop()
    for server in (SMALL, TWO_FRONT_ENDS, LLAMA3, CLUSTER):
        server.stop()


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


@pytest.fixture
def small_server(tmp_path_factory) -> RunningServer:
    """A second server, shared by the modules that need what the session server lacks (launch_small).
    Started before its first test, and again if a test stopped it (tests/integration/test_reliability.py
    drains it last)."""
    return SMALL.ready(tmp_path_factory)


@pytest.fixture
def cluster(tmp_path_factory) -> Cluster:
    """Three replicas sharing Postgres and Redis behind the nginx gateway (tests/integration/cluster.py)."""
    return CLUSTER.ready(tmp_path_factory)


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
