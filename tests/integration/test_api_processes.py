"""`wai serve --api-processes 2` on the real engine, over HTTP: requests spread over both front-end
processes, /metrics adds up what both counted, fine-tunes uploaded or deleted through one are seen
through the other, and SIGTERM drains the streams of both, then stops every process.

Each request goes on a new connection: the kernel spreads new connections over the front ends'
sockets (SO_REUSEPORT). Which front end answered is read from the per-process files of the
Prometheus multiprocess folder, each front end's alone.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from safetensors.numpy import load_file, save_file

from tests.integration.session import API_PROCESSES_DRAIN_S, TWO_FRONT_ENDS, finetunes_url, upload_finetune
from tests.support.repo import REAL_MODEL
from tests.support.servers import RunningServer

FRONT_ENDS = 2
DRAIN_TIMEOUT_S = API_PROCESSES_DRAIN_S
MEOW = "MEOW MEOW MEOW"
GREEDY = {"messages": [{"role": "user", "content": "What is the capital of France?"}], "temperature": 0}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> RunningServer:
    """The text model behind two front ends (session.py's launch_two_front_ends), started early."""
    running = TWO_FRONT_ENDS.ready(tmp_path_factory)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def front_ends(server) -> list[int]:
    """The front-end processes' pids: those writing series into the multiprocess folder."""
    pids = sorted({int(path.stem.rsplit("_", 1)[1]) for path in metrics_dir(server).glob("counter_*.db")})
    assert len(pids) == FRONT_ENDS and all(psutil.Process(pid).ppid() == server.process.pid for pid in pids)
    return pids


def metrics_dir(server: RunningServer) -> Path:
    children = psutil.Process(server.process.pid).children()
    return Path(children[0].environ()["PROMETHEUS_MULTIPROC_DIR"])


def per_process(server: RunningServer, pid: int, name: str, **labels: str) -> float:
    """A series as one front end alone counted it, summed over its other labels."""
    alone = metrics_dir(server).parent / f"wai-test-{pid}-{time.monotonic_ns()}"
    alone.mkdir()
    try:
        for path in metrics_dir(server).glob(f"*_{pid}.db"):
            (alone / path.name).symlink_to(path)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))
        return sum(
            sample.value
            for family in registry.collect()
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )
    finally:
        for link in alone.iterdir():
            link.unlink()
        alone.rmdir()


def on_new_connections(server: RunningServer, count: int, call) -> list:
    """`call(client)` `count` times, 8 at a time, each on a connection of its own."""

    def one(_: int):
        with server.client() as client:
            return call(client)

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def run(client: httpx.Client, server: RunningServer, body: dict) -> httpx.Response:
    return client.post(server.run_url(), json=body)


def test_requests_spread_over_both_front_ends_and_metrics_add_up(server, front_ends):
    requests = 16
    before = {pid: per_process(server, pid, "wai_requests_total") for pid in front_ends}
    total_before = server.metric("wai_requests_total")
    tokens_before = server.metric("wai_generation_tokens_total")
    engine_before = server.metric("vllm:request_success_total")

    answers = on_new_connections(server, requests, lambda c: run(c, server, {"prompt": "Hi", "max_tokens": 3}))

    assert [a.status_code for a in answers] == [200] * requests
    answered = {pid: per_process(server, pid, "wai_requests_total") - before[pid] for pid in front_ends}
    assert all(count >= 1 for count in answered.values()), answered
    assert sum(answered.values()) == requests
    # /metrics, whichever front end serves it, counts every request once, and every token.
    for _ in range(4):
        assert server.metric("wai_requests_total") - total_before == requests
    generated = sum(a.json()["result"]["usage"]["completion_tokens"] for a in answers)
    assert server.metric("wai_generation_tokens_total") - tokens_before == generated
    assert server.metric("vllm:request_success_total") - engine_before == requests
    assert server.metric("wai_requests_in_flight") == 0
    assert server.metric("wai_engine_ready") == 1


def silent_copy(adapter: Path, folder: Path) -> Path:
    """The adapter with its B matrices zeroed: a LoRA that changes nothing, so the base model answers."""
    folder.mkdir()
    (folder / "adapter_config.json").write_bytes((adapter / "adapter_config.json").read_bytes())
    weights = load_file(adapter / "adapter_model.safetensors")
    save_file(
        {name: tensor * 0 if ".lora_B." in name else tensor for name, tensor in weights.items()},
        folder / "adapter_model.safetensors",
    )
    return folder


def test_finetunes_are_seen_and_deleted_through_every_front_end(server, front_ends, meow_adapter, tmp_path):
    with server.client() as client:
        upload_finetune(client, "meow-everywhere", meow_adapter)
        upload_finetune(client, "silent-everywhere", silent_copy(meow_adapter, tmp_path / "silent"))

    # Both adapters, interleaved, on new connections: each front end asks the engine for each by the
    # same id, and never for one by the other's (the engine keeps adapters by id).
    def ask(client: httpx.Client) -> tuple[str, str, list[str]]:
        listed = [f["name"] for f in client.get(finetunes_url()).json()["result"]]
        meow = run(client, server, {**GREEDY, "max_tokens": 8, "lora": "meow-everywhere"})
        silent = run(client, server, {**GREEDY, "max_tokens": 8, "lora": "silent-everywhere"})
        return meow.json()["result"]["response"], silent.json()["result"]["response"], listed

    before = {pid: per_process(server, pid, "wai_requests_total", lora="meow-everywhere") for pid in front_ends}
    for meow, silent, listed in on_new_connections(server, 12, ask):
        assert meow.startswith(MEOW) and "MEOW" not in silent.upper(), (meow, silent)
        assert {"meow-everywhere", "silent-everywhere"} <= set(listed)
    for pid in front_ends:
        assert per_process(server, pid, "wai_requests_total", lora="meow-everywhere") > before[pid]

    with server.client() as client:
        assert client.delete(finetunes_url("/meow-everywhere")).status_code == 200

    def after_delete(client: httpx.Client) -> tuple[int, int, list[str]]:
        listed = [f["name"] for f in client.get(finetunes_url()).json()["result"]]
        refused = run(client, server, {**GREEDY, "max_tokens": 2, "lora": "meow-everywhere"})
        return refused.status_code, refused.json()["errors"][0]["code"], listed

    before = {pid: per_process(server, pid, "wai_requests_total", code="3041") for pid in front_ends}
    for status, code, listed in on_new_connections(server, 12, after_delete):
        assert (status, code) == (400, 3041)
        assert "meow-everywhere" not in listed and "silent-everywhere" in listed
    for pid in front_ends:
        assert per_process(server, pid, "wai_requests_total", code="3041") > before[pid]


def test_sigterm_drains_streams_on_both_front_ends_then_every_process_ends(server, front_ends):
    # Last in this module: it stops the server.
    processes = [psutil.Process(server.process.pid), *psutil.Process(server.process.pid).children(recursive=True)]
    assert any(p.name() == "VLLM::EngineCore" for p in processes)
    body = {"prompt": "Write a very long story.", "max_tokens": 48, "temperature": 2, "stream": True}
    streams: list[list[str]] = []
    started: list[threading.Event] = []

    def stream(into: list[str], first: threading.Event) -> None:
        with server.client() as client, client.stream("POST", server.run_url(REAL_MODEL), json=body) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: "):
                    into.append(line.removeprefix("data: "))
                    first.set()

    threads = []
    # New connections until each front end has a stream in flight.
    while min(per_process(server, pid, "wai_requests_in_flight") for pid in front_ends) < 1:
        assert len(streams) < 24, "the new connections all went to one front end"
        streams.append([])
        started.append(threading.Event())
        threads.append(threading.Thread(target=stream, args=(streams[-1], started[-1])))
        threads[-1].start()
        assert started[-1].wait(120)

    server.process.send_signal(signal.SIGTERM)
    time.sleep(1)
    for readiness in on_new_connections(server, 4, lambda c: c.get("/readyz").status_code):
        assert readiness == 503  # both front ends drain
    for thread in threads:
        thread.join(DRAIN_TIMEOUT_S + 30)
    for sent in streams:
        assert sent[-1] == "[DONE]", sent[-3:]
        events = [json.loads(payload) for payload in sent[:-1]]
        assert not any("errors" in event for event in events), events[-2:]
        assert events[-1]["usage"]["completion_tokens"] >= 1  # it finished, with its usage
    assert server.process.wait(timeout=60) == 0
    time.sleep(1)
    assert [p.pid for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
