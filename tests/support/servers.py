"""Start a server for tests to talk to over HTTP, and wait until it is ready; three ways:

- `start_server`: a real `wai serve` process on the real engine (the integration tier);
- `serve_app`: the real app in this process on the fake engines (tests/support/fakes.py), served by
  uvicorn in a thread (the pipeline, fuzz and load-generator tiers);
- `running_command`: any command with a readiness URL (Prometheus, workerd, nginx).

All three wait the same way (`wait_until_ready`) and stop what they started.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI

from server.app import create_app
from server.cli import DrainingServer, server_config
from server.config import Settings
from tests.support.fakes import EMBEDDING_MODEL, TEXT_MODEL, FakeEmbeddingEngine, FakeEngines, FakeTextEngine
from tests.support.metrics import scrape
from tests.support.ports import free_port
from tests.support.repo import ARTIFACTS, DEFAULT_CONFIG, ROOT, STAND_IN


def is_ok(status: int) -> bool:
    return status == 200


def wait_until_ready(
    url: str,
    alive: Callable[[], bool],
    why_not: Callable[[], str],
    timeout: float,
    ready: Callable[[int], bool] = is_ok,
    interval: float = 0.1,
    verify: bool = True,
) -> list[int]:
    """Poll `url` until its status is `ready`, and return every status seen. Fails as soon as `alive()`
    is false, or after `timeout` seconds, with `why_not()` (a log's tail) in the message."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        if not alive():
            raise RuntimeError(f"{url}: the server stopped while starting:\n{why_not()}")
        try:
            seen.append(httpx.get(url, timeout=5, verify=verify).status_code)
            if ready(seen[-1]):
                return seen
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} was not ready in {timeout} s:\n{why_not()}")
        time.sleep(interval)


def stop_process(process: subprocess.Popen, stop_signal: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Ask `process` to stop with `stop_signal`; kill it after `timeout` seconds."""
    if process.poll() is None:
        process.send_signal(stop_signal)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


# --- any command ------------------------------------------------------------------------------


@dataclass
class Command:
    process: subprocess.Popen
    url: str
    log_path: Path


@contextmanager
def running_command(
    command: list[str],
    url: str,
    ready_path: str,
    log_path: Path,
    timeout: float = 60,
    ready: Callable[[int], bool] = is_ok,
    stop_signal: int = signal.SIGTERM,
    **popen: Any,
) -> Iterator[Command]:
    """Start `command` (its output in `log_path`), wait until `url` + `ready_path` is `ready`, and stop it
    with `stop_signal` on exit."""
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, **popen)
        try:
            wait_until_ready(url + ready_path, lambda: process.poll() is None, lambda: tail(log_path), timeout, ready)
            yield Command(process, url, log_path)
        finally:
            stop_process(process, stop_signal)


# --- wai, as a process or in process -------------------------------------------------------------


@dataclass
class HttpServer:
    """A wai server's address, and clients for it."""

    base_url: str
    model: str  # the run endpoint's model when a test names none
    api_key: str | None = None
    timeout: float = 10

    def run_url(self, model: str | None = None, account: str = "test-account") -> str:
        return f"{self.base_url}/client/v4/accounts/{account}/ai/run/{model or self.model}"

    def client_options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return {"base_url": self.base_url, "headers": headers, "timeout": self.timeout, **kwargs}

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(**self.client_options(kwargs))

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(**self.client_options(kwargs))


@dataclass(kw_only=True)
class RunningServer(HttpServer):
    """A `wai serve` process, its log, and the /readyz statuses seen while it started."""

    process: subprocess.Popen
    log_path: Path
    readiness: list[int] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request_log(self) -> list[dict[str, Any]]:
        """The server's per-request JSON log lines, in order."""
        return [json.loads(line) for line in self.log().splitlines() if line.startswith("{") and '"request_id"' in line]

    def metric(self, name: str) -> float:
        """Sum of a Prometheus series over its labels, read from /metrics."""
        return scrape(self).value(name)

    def engine_running(self, timeout: float = 60) -> float:
        """vLLM's count of running requests, once it is 0 or after `timeout` seconds (for aborts)."""
        deadline = time.monotonic() + timeout
        while (running := self.metric("vllm:num_requests_running")) > 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        return running

    def wait_until_ready(self, timeout: float = 600) -> None:
        """Return once /readyz is 200 (the statuses seen are kept in `readiness`); stop it if it never is."""
        try:
            self.readiness = wait_until_ready(
                f"{self.base_url}/readyz", lambda: self.process.poll() is None, self.log, timeout, interval=0.5
            )
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        stop_process(self.process)


class Prelaunched:
    """A test server whose start may begin before its first test: `launch` starts it (once; again when
    a test stopped it), `ready` waits for it. `make(folder)` launches it without waiting."""

    def __init__(self, name: str, make: Callable[[Path], RunningServer]):
        self.name, self.make = name, make
        self.running: RunningServer | None = None
        self._lock = threading.Lock()

    def launch(self, folders: pytest.TempPathFactory) -> RunningServer:
        with self._lock:
            if self.running is None or self.running.process.poll() is not None:
                self.running = self.make(folders.mktemp(self.name))
            return self.running

    def ready(self, folders: pytest.TempPathFactory) -> RunningServer:
        running = self.launch(folders)
        running.wait_until_ready()
        return running

    def stop(self) -> None:
        if self.running is not None:
            self.running.stop()


def text_only_config(folder: Path, model: dict | None = None, engine: dict | None = None, **settings) -> Path:
    """configs/default.yaml with its text model alone (no embeddings model, to start quickly), that
    model's fields updated by `model` and its engine's by `engine`, and top-level `settings`;
    written into `folder`."""
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    text_model = config["models"][0]
    config["models"] = [{**text_model, **(model or {}), "engine": {**text_model["engine"], **(engine or {})}}]
    config.update(settings)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_server(name: str, startup_timeout: float = 600, **launch: Any) -> RunningServer:
    """`wai serve` on a free port (`launch_server`'s arguments), its log in test-artifacts/<name>.log;
    returns once /readyz is 200."""
    server = launch_server(name, **launch)
    server.wait_until_ready(startup_timeout)
    return server


def launch_server(
    name: str,
    config: Path = DEFAULT_CONFIG,
    env: dict[str, str] | None = None,
    api_keys: list[str] | None = None,
    api_processes: int | None = None,
) -> RunningServer:
    """`wai serve` with `config`, started on a free port and not awaited: it is ready once
    `wait_until_ready` returns. The first of `api_keys` is the key its clients send."""
    ARTIFACTS.mkdir(exist_ok=True)
    port = free_port()
    log_path = ARTIFACTS / f"{name}.log"
    proc_env = {**os.environ, **(env or {})}
    proc_env.pop("WAI_API_KEYS", None)
    if "WAI_BATCH__DB_PATH" not in proc_env and not (yaml.safe_load(config.read_text()).get("batch") or {}).get(
        "db_path"
    ):
        # Each test server keeps its batch jobs apart, never in the user's own cache.
        batch_db = ARTIFACTS / f"{name}.batch.sqlite3"
        for stale in ARTIFACTS.glob(f"{name}.batch.sqlite3*"):
            stale.unlink()
        proc_env["WAI_BATCH__DB_PATH"] = str(batch_db)
    if api_keys:
        proc_env["WAI_API_KEYS"] = ",".join(api_keys)
    command = [sys.executable, "-m", "server.cli", "serve", "--config", str(config), "--port", str(port)]
    if api_processes is not None:
        command += ["--api-processes", str(api_processes)]
    with log_path.open("w") as log_file:
        process = subprocess.Popen(command, cwd=ROOT, env=proc_env, stdout=log_file, stderr=subprocess.STDOUT)
    return RunningServer(
        f"http://127.0.0.1:{port}",
        STAND_IN,
        api_keys[0] if api_keys else None,
        timeout=120,
        process=process,
        log_path=log_path,
    )


@dataclass(kw_only=True)
class ServedApp(HttpServer):
    """The real app on the fake engines, served in this process by uvicorn in `thread`."""

    app: FastAPI
    engines: FakeEngines
    server: DrainingServer
    thread: threading.Thread = field(repr=False)

    @property
    def text_engine(self) -> FakeTextEngine:
        return self.engines.texts[TEXT_MODEL]

    @property
    def embedding_engine(self) -> FakeEmbeddingEngine:
        return self.engines.embeddings[EMBEDDING_MODEL]


@contextmanager
def serve_app(settings: Settings, engines: FakeEngines | None = None, timeout: float = 10) -> Iterator[ServedApp]:
    """The real app on the fakes, served by uvicorn on a free loopback port in a background thread.

    Yields once the lifespan has started the engines and /readyz says ready; stops the server
    (and so the engines, through the lifespan) on exit.
    """
    engines = engines or FakeEngines()
    app = create_app(settings, engines)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound here and handed to uvicorn: no race for the port
    port = sock.getsockname()[1]
    config = server_config(app, settings, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=2)
    server = DrainingServer(config, app.state.lifecycle)  # wai serve's own; its signals come from tests
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="wai-test-server", daemon=True)
    thread.start()
    scheme = "https" if settings.tls.enabled else "http"
    served = ServedApp(
        f"{scheme}://127.0.0.1:{port}", TEXT_MODEL, app=app, engines=engines, server=server, thread=thread
    )
    try:
        wait_until_ready(
            f"{served.base_url}/readyz",
            thread.is_alive,
            lambda: "the test server's thread ended",
            timeout,
            interval=0.01,
            verify=False,  # ready or not, whoever signed its certificate
        )
        yield served
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
        if thread.is_alive():
            raise RuntimeError("the test server did not stop")
