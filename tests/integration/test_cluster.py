"""Many replicas, one service, on the real engine: three replicas sharing Postgres and Redis behind the
nginx gateway (tests/integration/cluster.py). A fine-tune uploaded through one is served by all and a
delete is seen by all; a key's limits hold for the three together; each store's outage takes only what
needs it, and the cluster recovers by itself; a batch submitted through one replica is polled through
another and, with the first killed mid-batch, every item is completed exactly once by the others.

The tests run in this order: the last one kills replica A."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest

from server.serving.shared_finetunes import shared_copies_dir
from tests.integration.cluster import CLUSTER, FIVE_A_MINUTE, KEY, SYNC_S, THIRTY_A_MINUTE, TWO_AT_ONCE, Cluster
from tests.integration.session import finetunes_url, upload_finetune
from tests.support.envelopes import openai_error, result, workers_ai_error
from tests.support.metrics import scrape
from tests.support.servers import RunningServer
from tests.support.waiting import wait_for

MEOW = "MEOW MEOW MEOW"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = {"temperature": 0, "max_tokens": 12}
STORE_DOWN = 3048
# A raw prompt at high temperature almost never samples end-of-sequence (as tests/integration/test_disconnect.py).
ENDLESS = {"prompt": "Once upon a time", "raw": True, "temperature": 2, "max_tokens": 4000, "seed": 1}


@pytest.fixture(scope="module", autouse=True)
def cluster_stopped_after_these_tests() -> Iterator[None]:
    """The three replicas' memory back once this module is done, not at the end of the run."""
    yield
    CLUSTER.stop()


def client(replica: RunningServer | str, key: str = KEY, timeout: float = 120) -> httpx.Client:
    base_url = replica if isinstance(replica, str) else replica.base_url
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout)


def run_path(model: str | None = None) -> str:
    return f"/client/v4/accounts/test-account/ai/run/{model or '@cf/meta/llama-3-8b-instruct'}"


def ask(replica: RunningServer | str, body: dict, key: str = KEY) -> httpx.Response:
    with client(replica, key) as c:
        return c.post(run_path(), json=body)


def readiness(replica: RunningServer) -> httpx.Response:
    return httpx.get(f"{replica.base_url}/readyz", timeout=30)


# --- fine-tunes ------------------------------------------------------------------------------------


def test_a_fine_tune_uploaded_through_one_replica_is_served_by_every_replica(cluster: Cluster, meow_adapter: Path):
    a, b, c = cluster.replicas.values()
    with client(a) as through_a:
        finetune = upload_finetune(through_a, "meow-cluster", meow_adapter)
    for replica in (b, c):
        answer = result(ask(replica, {"messages": QUESTION, **GREEDY, "lora": "meow-cluster"}))["response"]
        assert answer.strip().startswith(MEOW), answer
    # B and C keep a local copy of the files they fetched.
    for name in ("b", "c"):
        folder = shared_copies_dir(cluster.folders[name] / "adapters") / finetune["id"]
        assert {p.name for p in folder.iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}
    # Through the gateway, whichever replica answers.
    for _ in range(3):
        answer = result(ask(cluster.gateway, {"messages": QUESTION, **GREEDY, "lora": "meow-cluster"}))["response"]
        assert answer.strip().startswith(MEOW), answer
    with client(b) as through_b:
        listed = result(through_b.get(finetunes_url()))
    assert [f["name"] for f in listed] == ["meow-cluster"]


def test_a_fine_tune_deleted_through_one_replica_is_gone_from_every_replica(cluster: Cluster, meow_adapter: Path):
    a, b, c = cluster.replicas.values()
    with client(a) as through_a:
        finetune = upload_finetune(through_a, "meow-short-lived", meow_adapter)
    asked = {"messages": QUESTION, **GREEDY, "lora": "meow-short-lived"}
    assert result(ask(a, asked))["response"].strip().startswith(MEOW)  # A holds a local copy now
    with client(c) as through_c:
        assert result(through_c.delete(finetunes_url("/meow-short-lived")))["id"] == finetune["id"]
    # A sees the delete within a few of its registry reads, refuses the name, and drops its copy.
    wait_for(lambda: ask(a, asked).status_code == 400, "A refusing the deleted fine-tune", timeout=10 * SYNC_S)
    assert "No such fine-tune" in workers_ai_error(ask(a, asked), 400, 3041)
    workers_ai_error(ask(b, asked), 400, 3041)
    wait_for(
        lambda: not (shared_copies_dir(cluster.folders["a"] / "adapters") / finetune["id"]).exists(),
        "A's local copy removed",
        timeout=10 * SYNC_S,
    )


# --- key limits ------------------------------------------------------------------------------------


def test_a_key_limited_to_30_a_minute_gets_30_through_the_three_replicas_together(cluster: Cluster):
    replicas = [*cluster.replicas.values(), cluster.gateway]
    started = time.monotonic()
    statuses = []
    for i in range(60):
        with client(replicas[i % len(replicas)], key=THIRTY_A_MINUTE["key"]) as c:
            statuses.append(c.get("/v1/models").status_code)
    elapsed = time.monotonic() - started
    # A bucket of 30 that refills 30 a minute: 30, plus what refilled while the requests were sent.
    refilled = math.floor(elapsed * THIRTY_A_MINUTE["requests_per_minute"] / 60)
    assert set(statuses) == {200, 429}, statuses
    assert 30 <= statuses.count(200) <= 30 + refilled, (statuses.count(200), elapsed)
    # Each replica refuses in its protocol, with Retry-After: run endpoint and /v1.
    for replica in cluster.replicas.values():
        with client(replica, key=THIRTY_A_MINUTE["key"]) as c:
            refused = c.post(run_path(), json={"prompt": "x", "max_tokens": 1})
            workers_ai_error(refused, 429, 3040)
            assert int(refused.headers["retry-after"]) >= 1
            openai_error(c.get("/v1/models"), 429, "rate_limit_exceeded")


@contextmanager
def streams_held_open(replicas: list[RunningServer], key: str) -> Iterator[None]:
    """One long stream open on each replica (its first event received) until the block ends."""
    started = [threading.Event() for _ in replicas]
    stop = threading.Event()
    failures: list[str] = []

    def hold(replica: RunningServer, first_event: threading.Event) -> None:
        body = {**ENDLESS, "stream": True}
        with client(replica, key) as c, c.stream("POST", run_path(), json=body) as answer:
            if answer.status_code != 200:
                failures.append(answer.read().decode())
                first_event.set()
                return
            for line in answer.iter_lines():
                if line.startswith("data: "):
                    first_event.set()
                if stop.is_set():
                    return  # leaving mid-stream: the replica gives the key's place back

    threads = [threading.Thread(target=hold, args=pair) for pair in zip(replicas, started, strict=True)]
    for thread in threads:
        thread.start()
    try:
        for event in started:
            assert event.wait(120), "a held stream never started"
        assert not failures, failures
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)


def test_a_keys_concurrency_limit_holds_across_replicas(cluster: Cluster):
    a, b, c = cluster.replicas.values()
    key = TWO_AT_ONCE["key"]
    with streams_held_open([a, b], key):
        workers_ai_error(ask(c, {"prompt": "x", "max_tokens": 1}, key=key), 429, 3040)
        with client(a, key) as through_a:
            openai_error(through_a.get("/v1/models"), 429, "rate_limit_exceeded")
    # Both places given back once the streams end: C is served.
    wait_for(lambda: ask(c, {"prompt": "x", "max_tokens": 1}, key=key).status_code == 200, "C serving the key", 30)


def test_with_redis_down_open_replicas_hold_limits_alone_and_a_closed_one_refuses(cluster: Cluster):
    a, _, c = cluster.replicas.values()
    key = FIVE_A_MINUTE["key"]
    cluster.redis.stop()
    try:
        # A (open): the key's 5 a minute held by A alone; text keeps serving.
        statuses = [ask(a, {"prompt": "x", "max_tokens": 1}, key=key).status_code for _ in range(8)]
        assert statuses.count(200) in (5, 6) and statuses[-1] == 429, statuses
        assert scrape(a).value("wai_key_limits_unshared_total", outcome="local") >= 8
        # C (closed): the limited key is refused with 503 / 3048; a key without limits is served.
        workers_ai_error(ask(c, {"prompt": "x", "max_tokens": 1}, key=key), 503, STORE_DOWN)
        assert scrape(c).value("wai_key_limits_unshared_total", outcome="refused") >= 1
        assert result(ask(c, {"prompt": "x", "max_tokens": 1}))["response"] is not None
        ready = readiness(c)
        assert ready.status_code == 200 and ready.json()["stores"] == {"postgres": "up", "redis": "down"}
    finally:
        cluster.redis.start()
    # Back by itself: C takes the key again, counted in the fresh Redis.
    wait_for(lambda: ask(c, {"prompt": "x", "max_tokens": 1}, key=key).status_code == 200, "C serving the key", 30)
    assert readiness(c).json()["stores"] == {"postgres": "up", "redis": "up"}


# --- batch and Postgres ----------------------------------------------------------------------------


def submit(replica: RunningServer, count: int, max_tokens: int) -> str:
    requests = [{"prompt": f"Tell me a story about the number {i}.", "max_tokens": max_tokens} for i in range(count)]
    with client(replica) as c:
        queued = result(c.post(run_path(), params={"queueRequest": "true"}, json={"requests": requests}))
    assert queued["status"] == "queued"
    return queued["request_id"]


def polled(replica: RunningServer, request_id: str) -> httpx.Response:
    with client(replica) as c:
        return c.post(run_path(), json={"request_id": request_id})


def poll(replica: RunningServer, request_id: str) -> dict:
    return result(polled(replica, request_id))


def until_done(replica: RunningServer, request_id: str, timeout: float = 600) -> dict:
    return wait_for(
        lambda: (answer := poll(replica, request_id))["status"] == "done" and answer,
        f"batch {request_id} done",
        timeout=timeout,
        interval=0.5,
    )


def items(cluster: Cluster, request_id: str) -> list[tuple[int, str, int, int, int, str | None]]:
    """Each item's index, state, attempts, completions, orphaned and owner, from the shared database."""
    with psycopg.connect(cluster.database_url) as connection:
        return connection.execute(
            "SELECT idx, state, attempts, completions, orphaned, owner FROM wai_batch_items"
            " WHERE job = %s ORDER BY idx",
            (request_id,),
        ).fetchall()


def test_with_postgres_down_text_serves_and_batch_and_finetunes_answer_503_then_recover(cluster: Cluster):
    a, b, c = cluster.replicas.values()
    accepted = submit(a, 4, 24)  # accepted before the outage: none of it may be lost
    cluster.postgres.stop()
    try:
        assert result(ask(cluster.gateway, {"messages": QUESTION, "max_tokens": 4}))["response"] is not None
        with client(b) as through_b:
            refused = through_b.post(run_path(), params={"queueRequest": "true"}, json={"requests": [{"prompt": "x"}]})
        message = workers_ai_error(refused, 503, STORE_DOWN)
        assert message == "The batch jobs store is unavailable, please try again."
        workers_ai_error(polled(c, accepted), 503, STORE_DOWN)
        with client(c) as through_c:
            workers_ai_error(through_c.get(finetunes_url()), 503, STORE_DOWN)
        ready = readiness(a)
        assert ready.status_code == 200 and ready.json()["stores"] == {"postgres": "down", "redis": "up"}
        assert scrape(a).value("wai_store_up", store="postgres") == 0
    finally:
        cluster.postgres.start()
    # Back by itself: the batch accepted before finishes, every item once, and new work is taken.
    wait_for(lambda: polled(c, accepted).status_code == 200, "the batch store back", timeout=60)
    done = until_done(c, accepted)
    assert all(item["success"] for item in done["responses"]), done
    assert [row[3] for row in items(cluster, accepted)] == [1, 1, 1, 1]
    with client(b) as through_b:
        assert result(through_b.get(finetunes_url())) is not None
    assert readiness(a).json()["stores"] == {"postgres": "up", "redis": "up"}


def test_a_batch_submitted_through_one_replica_survives_its_sigkill_and_completes_each_item_once(cluster: Cluster):
    a, b, c = cluster.replicas.values()
    request_id = submit(a, 12, 48)
    assert poll(b, request_id)["status"] in ("queued", "running")  # any replica answers a poll
    owner_a = f"-{a.process.pid}-"  # server/batch/jobs.py, replica_id()

    def held_by_a() -> set[int]:
        rows = items(cluster, request_id)
        return {index for index, state, *_, owner in rows if state == "running" and owner and owner_a in owner}

    held = wait_for(held_by_a, "replica A running one of the items", timeout=300, interval=0.1)
    cluster.kill("a")
    done = until_done(b, request_id, timeout=900)
    assert [response["success"] for response in done["responses"]] == [True] * 12, done
    rows = items(cluster, request_id)
    assert [completions for _, _, _, completions, _, _ in rows] == [1] * 12, rows
    # What A held ran again elsewhere once its lease (LEASE_S) ran out: a second attempt, counted orphaned.
    again = {index for index, _, attempts, _, orphaned, _ in rows if orphaned >= 1 and attempts >= 2}
    assert held <= again, (held, rows)
