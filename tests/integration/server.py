"""Start a real `wai serve` process on the real engine, for tests to talk to over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
DEFAULT_CONFIG = ROOT / "configs" / "default.yaml"
STAND_IN = "@cf/meta/llama-3-8b-instruct"
REAL_MODEL = "@cf/huggingfacetb/smollm2-135m-instruct"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    process: subprocess.Popen
    base_url: str
    log_path: Path
    api_key: str | None
    readiness: list[int] = field(default_factory=list)  # /readyz statuses seen while starting

    def run_url(self, model: str = STAND_IN, account: str = "test-account") -> str:
        return f"{self.base_url}/client/v4/accounts/{account}/ai/run/{model}"

    def client(self, **kwargs) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=120, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metric(self, name: str) -> float:
        """Sum of a Prometheus series over its labels, read from /metrics."""
        text = httpx.get(f"{self.base_url}/metrics", timeout=10).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def engine_running(self, timeout: float = 60) -> float:
        """vLLM's count of running requests, once it is 0 or after `timeout` seconds (for aborts)."""
        deadline = time.monotonic() + timeout
        while (running := self.metric("vllm:num_requests_running")) > 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        return running

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


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


def start_server(
    name: str,
    config: Path = DEFAULT_CONFIG,
    env: dict[str, str] | None = None,
    api_keys: list[str] | None = None,
    startup_timeout: float = 600,
    api_processes: int | None = None,
) -> RunningServer:
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
    log_file = log_path.open("w")
    command = [sys.executable, "-m", "server.cli", "serve", "--config", str(config), "--port", str(port)]
    if api_processes is not None:
        command += ["--api-processes", str(api_processes)]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=proc_env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    server = RunningServer(process, f"http://127.0.0.1:{port}", log_path, api_keys[0] if api_keys else None)
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"wai exited with {process.returncode} while starting:\n{server.log()[-3000:]}")
        try:
            status = httpx.get(f"{server.base_url}/readyz", timeout=5).status_code
            server.readiness.append(status)
            if status == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"wai did not become ready in {startup_timeout} s:\n{server.log()[-3000:]}")
