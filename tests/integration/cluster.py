"""Three wai replicas sharing one Postgres and one Redis behind the project's nginx gateway, as
deploy/kubernetes runs them: the cluster test's servers (tests/integration/test_cluster.py).

The stores are private servers on loopback (tests/support/stores.py); each replica has its own port, its
own adapter folder (its local copy of the fine-tunes) and the same config, except that replica C refuses
limited keys while Redis is down (`cluster.key_limits_without_redis: closed`) where A and B hold their
limits alone. Started once the early commands have run (conftest.py), so that the three engines' starts
overlap the tiers before; the integration tier runs this test first, and the other servers start once
it is done (conftest.py).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.integration.session import UPLOAD_LIMIT
from tests.support.gateway import gateway_running
from tests.support.servers import RunningServer, launch_server, text_only_config
from tests.support.stores import PostgresServer, RedisServer, postgres_server, redis_server

KEY = "cluster-key"
THIRTY_A_MINUTE = {"name": "thirty-a-minute", "key": "thirty-key", "requests_per_minute": 30}
TWO_AT_ONCE = {"name": "two-at-once", "key": "two-key", "max_concurrent": 2}
FIVE_A_MINUTE = {"name": "five-a-minute", "key": "five-key", "requests_per_minute": 5}
LEASE_S = 3  # short, so that a killed replica's batch items come back quickly
SYNC_S = 1
NAMES = ("a", "b", "c")


@dataclass
class Cluster:
    postgres: PostgresServer
    redis: RedisServer
    database_url: str
    replicas: dict[str, RunningServer]
    folders: dict[str, Path]
    gateway: str = ""

    def wait_until_ready(self) -> None:
        for replica in self.replicas.values():
            replica.wait_until_ready()

    def kill(self, name: str) -> None:
        """SIGKILL a replica and its engine at once, as a lost node: nothing of it gets to clean up."""
        process = psutil.Process(self.replicas[name].process.pid)
        for each in [process, *process.children(recursive=True)]:
            each.kill()
        self.replicas[name].process.wait(30)


class ClusterLaunch:
    """Launch (once) and stop the cluster; the same interface as servers.Prelaunched. What `after_stop`
    was given starts once the cluster stopped: the suite's other servers, whose memory together with the
    three replicas' is more than a small machine has."""

    def __init__(self) -> None:
        self.cluster: Cluster | None = None
        self._stack = ExitStack()
        self._lock = threading.Lock()
        self._after_stop: list[Callable[[], object]] = []

    def after_stop(self, starts: list[Callable[[], object]]) -> None:
        self._after_stop += starts

    def launch(self, folders: pytest.TempPathFactory) -> Cluster:
        with self._lock:
            if self.cluster is None:
                self.cluster = self._launch(folders.mktemp("cluster"))
            return self.cluster

    def ready(self, folders: pytest.TempPathFactory) -> Cluster:
        cluster = self.launch(folders)
        cluster.wait_until_ready()
        if not cluster.gateway:
            ports = [int(r.base_url.rsplit(":", 1)[1]) for r in cluster.replicas.values()]
            cluster.gateway = self._stack.enter_context(gateway_running(folders.mktemp("gateway"), ports))
        return cluster

    def _launch(self, folder: Path) -> Cluster:
        postgres = self._stack.enter_context(postgres_server())
        redis = self._stack.enter_context(redis_server())
        database_url = postgres.new_database()
        config = text_only_config(
            folder,
            # A short context and a small KV cache: three engines beside the suite's other servers.
            model={"lora": {"enabled": True, "max_upload_bytes": UPLOAD_LIMIT}, "context_window": 4064},
            engine={"kv_cache_gib": 0.25, "max_num_seqs": 8, "max_model_len": 4096},
            keys=[THIRTY_A_MINUTE, TWO_AT_ONCE, FIVE_A_MINUTE],
            cluster={"lease_s": LEASE_S, "finetune_sync_s": SYNC_S},
            batch={"concurrency": 2},
        )
        replicas, folders = {}, {}
        for name in NAMES:
            folders[name] = folder / name
            env = {
                "WAI_DATABASE_URL": database_url,
                "WAI_REDIS_URL": redis.url,
                "WAI_ADAPTERS_DIR": str(folders[name] / "adapters"),
                "WAI_CLUSTER__KEY_LIMITS_WITHOUT_REDIS": "closed" if name == "c" else "open",
            }
            replicas[name] = launch_server(f"cluster-{name}", config=config, env=env, api_keys=[KEY])
        return Cluster(postgres, redis, database_url, replicas, folders)

    def stop(self) -> None:
        if self.cluster is not None:
            for replica in self.cluster.replicas.values():
                replica.stop()
        self._stack.close()  # the gateway, then the stores
        self.cluster, self._stack = None, ExitStack()
        starts, self._after_stop = self._after_stop, []
        threading.Thread(target=start_each, args=(starts,), name="after-cluster", daemon=True).start()


def start_each(starts: list[Callable[[], object]]) -> None:
    for start in starts:
        with contextlib.suppress(Exception):  # its fixture starts it again, and says why it fails
            start()


CLUSTER = ClusterLaunch()
