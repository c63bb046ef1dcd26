"""A server of the load generator's own: started, awaited until ready, stopped (soak, bench)."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(
    name: str, command: list[str], ready_url: str, log_path: Path, timeout_s: float, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen]:
    """Start `command`, wait until `ready_url` answers 200, and stop it with SIGTERM on exit."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        print(f"starting {name}: {shlex.join(command)}", file=sys.stderr, flush=True)
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode} while starting; see {log_path}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} was not ready after {timeout_s:g} s; see {log_path}")
                try:
                    if httpx.get(ready_url, timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(1)
            print(f"{name} is ready (pid {process.pid})", file=sys.stderr, flush=True)
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=90)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
