"""Private Postgres and Redis servers for the tests: each on a free loopback port, in a temporary folder,
with no system service and no configuration outside that folder (`make test` installs Debian's packages
when they are missing: scripts/install-test-tools.sh). A test may stop one and start it again on the same
port and data, as a store that fails and comes back.

Postgres refuses to run as root: as root, its processes run as the `postgres` user (Debian's package
makes it), or as `nobody`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis

from tests.support.ports import free_port
from tests.support.waiting import wait_for


def postgres_bin(program: str) -> str:
    """A Postgres server program: on PATH, or in Debian's versioned folder (newest first)."""
    found = shutil.which(program)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{program}"), reverse=True)
    if not candidates:
        raise RuntimeError(f"{program} not found: scripts/install-test-tools.sh installs Debian's postgresql")
    return candidates[0]


def _as_postgres_user() -> tuple[list[str], int | None, int | None]:
    """The command prefix and ids to run Postgres's programs as a user it accepts."""
    if os.getuid() != 0:
        return [], None, None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            user = pwd.getpwnam(name)
            prefix = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
            return prefix, user.pw_uid, user.pw_gid
    raise RuntimeError("running as root, and neither a postgres nor a nobody user exists to run Postgres")


@dataclass
class PostgresServer:
    folder: Path
    port: int = field(default_factory=free_port)
    _process: subprocess.Popen[bytes] | None = None

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://wai@127.0.0.1:{self.port}/{database}"

    def init(self) -> PostgresServer:
        prefix, uid, gid = _as_postgres_user()
        if uid is not None:
            os.chown(self.folder, uid, gid or 0)
        subprocess.run(
            [*prefix, postgres_bin("initdb"), "-D", str(self.data), "-U", "wai", "--auth=trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
        )
        return self

    def start(self) -> PostgresServer:
        prefix, _, _ = _as_postgres_user()
        options = [
            *("-p", str(self.port), "-k", str(self.folder), "-c", "listen_addresses=127.0.0.1"),
            # A test database: no fsync (the machine does not lose power in a test), but every commit is in
            # the log before it returns, so an immediate stop keeps it, as a production server does.
            *("-c", "fsync=off", "-c", "full_page_writes=off"),
            *("-c", "max_connections=200", "-c", "shared_buffers=32MB"),
        ]
        log = (self.folder / "postgres.log").open("ab")
        self._process = subprocess.Popen(
            [*prefix, postgres_bin("postgres"), "-D", str(self.data), *options], stdout=log, stderr=log
        )
        wait_for(self._answers, f"Postgres on port {self.port}", timeout=60, interval=0.1)
        return self

    def _answers(self) -> bool:
        assert self._process is not None and self._process.poll() is None, (self.folder / "postgres.log").read_text()
        try:
            with psycopg.connect(self.url(), connect_timeout=2) as connection:
                connection.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    def stop(self) -> None:
        """Stop at once (SIGQUIT: Postgres's immediate shutdown), as a crash or a lost node does."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGQUIT)
            self._process.wait(timeout=30)
        self._process = None

    def new_database(self) -> str:
        """The URL of a new, empty database on this server."""
        name = f"wai_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@dataclass
class RedisServer:
    folder: Path
    port: int = field(default_factory=free_port)
    _process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        program = shutil.which("redis-server") or "/usr/bin/redis-server"
        options = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        log = (self.folder / "redis.log").open("ab")
        self._process = subprocess.Popen(
            [program, *options, "--dir", str(self.folder)], stdout=log, stderr=log, cwd=self.folder
        )
        wait_for(self._answers, f"Redis on port {self.port}", timeout=30, interval=0.05)
        return self

    def _answers(self) -> bool:
        assert self._process is not None and self._process.poll() is None, (self.folder / "redis.log").read_text()
        try:
            return bool(redis.Redis.from_url(self.url, socket_connect_timeout=1).ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)
        self._process = None

    def flush(self) -> None:
        redis.Redis.from_url(self.url).flushall()


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    folder = Path(tempfile.mkdtemp(prefix="wai-postgres-"))
    server = PostgresServer(folder).init().start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    folder = Path(tempfile.mkdtemp(prefix="wai-redis-"))
    server = RedisServer(folder).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def until_refused(url: str, timeout: float = 10) -> None:
    """Wait until nothing answers at a store's port any more (a stopped server's sockets linger briefly)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(url, connect_timeout=1):
                pass
        except psycopg.OperationalError:
            return
        time.sleep(0.05)
