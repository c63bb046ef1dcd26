"""`make bench-key-limits`: what counting a key's limits in Redis adds to each of its requests.

Starts a private redis-server and two wai apps on the fake engines (tests/support/fakes.py), each
served by uvicorn in a process of its own as `wai serve` serves it: `local` counts a limited key's
limits in process (no `redis_url`), `redis` counts them in Redis (one script per request, and the
place given back after the last byte). One client sends the same small run request to each, one at
a time on a kept-alive connection, in alternating rounds so that both see the same machine. Per
series: latency p50 and p99 as the client sees it, and the app process's CPU time per request;
then redis over local, the ms added, and redis-server's own CPU per request.

    python -m benchmarks.key_limits [--requests 4000] [--rounds 8] [--warmup 300]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import redis
import uvicorn

from loadtests.servers import free_port, running
from server.app import create_app
from server.auth import digest
from server.cli import server_config
from server.stores.key_limits import redis_names
from tests.support.fakes import TEXT_MODEL, FakeEngines, fake_settings

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-key"
# Limits high enough that no request is refused: what is measured is the check, not a refusal.
LIMITS = {"requests_per_minute": 10**9, "max_concurrent": 10_000}
SERIES = ("local", "redis")
PROMPT = {"prompt": "Hi", "max_tokens": 4}


def serve(port: int, redis_url: str | None) -> None:
    """The main of an app process: the real app on the fake engines, a key with both limits."""
    root = Path(tempfile.mkdtemp(prefix="wai-bench-key-limits-"))
    settings = fake_settings(root, keys=[{"name": "bench", "key": KEY, **LIMITS}], redis_url=redis_url)
    app = create_app(settings, FakeEngines())  # type: ignore[arg-type]  # the fakes, as tests/support/servers.py serves them
    uvicorn.Server(server_config(app, settings, host="127.0.0.1", port=port, log_level="warning")).run()


def cpu_s(pid: int) -> float:
    """A process's CPU seconds so far (user and system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def redis_server(folder: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    program = shutil.which("redis-server") or "/usr/bin/redis-server"
    command = [program, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with (folder / "redis.log").open("w") as log:
        process = subprocess.Popen([*command, "--dir", str(folder)], stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 30
        while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() != b"PONG":
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"redis-server did not start; see {folder / 'redis.log'}")
            time.sleep(0.05)
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def app(name: str, folder: Path, redis_url: str | None) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "benchmarks.key_limits", "--serve", str(port)]
    if redis_url:
        command += ["--redis-url", redis_url]
    with running(name, command, f"{base}/readyz", folder / f"{name}.log", timeout_s=60) as process:
        yield base, process


def send(client: httpx.Client, url: str, count: int) -> list[float]:
    """`count` requests one after another; each one's latency in ms."""
    latencies = []
    for _ in range(count):
        start = time.perf_counter()
        response = client.post(url, json=PROMPT)
        latencies.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"{url}: {response.status_code} {response.text}")
    return latencies


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=4000, help="measured requests per series")
    parser.add_argument("--rounds", type=int, default=8, help="alternating rounds the requests are split into")
    parser.add_argument("--warmup", type=int, default=300, help="unmeasured requests per series first")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # an app process's own port
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.redis_url)
        return

    folder = Path(tempfile.mkdtemp(prefix="wai-bench-key-limits-"))
    with ExitStack() as stack:
        redis_url, redis_process = stack.enter_context(redis_server(folder))
        apps = {
            "local": stack.enter_context(app("local", folder, None)),
            "redis": stack.enter_context(app("redis", folder, redis_url)),
        }
        headers = {"Authorization": f"Bearer {KEY}"}
        clients = {
            name: stack.enter_context(httpx.Client(base_url=base, headers=headers)) for name, (base, _) in apps.items()
        }
        url = f"/client/v4/accounts/bench/ai/run/{TEXT_MODEL}"
        for name in SERIES:
            send(clients[name], url, args.warmup)
        latencies: dict[str, list[float]] = {name: [] for name in SERIES}
        cpu = dict.fromkeys(SERIES, 0.0)
        redis_cpu = 0.0
        per_round = args.requests // args.rounds
        for _ in range(args.rounds):
            for name in SERIES:
                pid = apps[name][1].pid
                before, redis_before = cpu_s(pid), cpu_s(redis_process.pid)
                latencies[name] += send(clients[name], url, per_round)
                cpu[name] += cpu_s(pid) - before
                if name == "redis":
                    redis_cpu += cpu_s(redis_process.pid) - redis_before
        if not redis.Redis.from_url(redis_url).exists(redis_names(digest(KEY))[0]):
            raise RuntimeError("the redis series' app did not count the key in Redis")
    report(latencies, cpu, redis_cpu)


def report(latencies: dict[str, list[float]], cpu: dict[str, float], redis_cpu: float) -> None:
    rows = {}
    print(f"{'series':<8} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/req':>10}")
    for name in SERIES:
        values = latencies[name]
        rows[name] = (percentile(values, 50), percentile(values, 99), cpu[name] * 1000 / len(values))
        print(f"{name:<8} {len(values):>8} {rows[name][0]:>8.3f} {rows[name][1]:>8.3f} {rows[name][2]:>10.3f}")
    (p50, p99, per_request), (base_p50, base_p99, base_cpu) = rows["redis"], rows["local"]
    print(
        f"redis/local: p50 {p50 / base_p50:.2f}x (+{p50 - base_p50:.3f} ms), "
        f"p99 {p99 / base_p99:.2f}x (+{p99 - base_p99:.3f} ms), "
        f"front-end CPU {per_request / base_cpu:.2f}x (+{per_request - base_cpu:.3f} ms/request)"
    )
    print(f"redis-server CPU: {redis_cpu * 1000 / len(latencies['redis']):.3f} ms/request")


if __name__ == "__main__":
    main()
