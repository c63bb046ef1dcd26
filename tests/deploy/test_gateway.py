"""deploy/gateway: nginx's own check of the shipped config, then nginx itself on loopback in front of two
small HTTP servers standing in for wai replicas: a session's requests always reach the same replica,
requests without `x-session-affinity` go to the least busy one, and a stream's events go out as they come."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.gateway import NGINX, gateway_copy, gateway_running, nginx_test
from tests.support.http_target import CannedHandler
from tests.support.ports import free_port

pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx missing: `make test-tools` installs it")


def test_shipped_config_passes_nginx_check(tmp_path: Path) -> None:
    result = nginx_test(gateway_copy(tmp_path, [free_port(), free_port()], free_port()))
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr and "test is successful" in result.stderr


@pytest.mark.parametrize(
    ("mistake", "edit", "message"),
    [
        (
            "a balancing method nginx does not have",
            lambda s: s.replace("least_conn;", "least_connections;"),
            'unknown directive "least_connections"',
        ),
        (
            "the consistent hash outside an upstream group",
            lambda s: s.replace(
                "listen 127.0.0.1", "hash $http_x_session_affinity consistent;\n        listen 127.0.0.1"
            ),
            '"hash" directive is not allowed here',
        ),
        ("a missing semicolon", lambda s: s.replace("least_conn;", "least_conn"), "invalid number of arguments"),
        ("the replica list left out", lambda s: s.replace("include replicas.conf;", "", 1), "no servers are inside"),
    ],
)
def test_broken_copy_fails_nginx_check(tmp_path: Path, mistake: str, edit: Callable[[str], str], message: str) -> None:
    result = nginx_test(gateway_copy(tmp_path, [free_port(), free_port()], free_port(), edit))
    assert result.returncode != 0, f"nginx accepted {mistake}"
    assert message in result.stderr


class Replica:
    """A stand-in for one wai replica: answers with its name, can hold a request open, and streams."""

    def __init__(self, name: str):
        self.name = name
        self.release = threading.Event()
        self.holding = threading.Event()
        self.port = 0  # set once it is served

    def handler(self) -> type[CannedHandler]:
        replica = self

        class Handler(CannedHandler):
            def do_POST(self) -> None:
                self.read_body()
                if self.path == "/stream":
                    # Second event only once the client has the first: a buffering gateway never delivers it.
                    self.start_chunks(200, "text/event-stream")
                    self.chunk(b"data: first\n\n")
                    released = replica.release.wait(20)
                    self.chunk(b"data: second\n\n" if released else b"data: never-released\n\n")
                    self.chunk(b"")
                    return
                if self.path == "/hold":
                    replica.holding.set()
                    replica.release.wait(20)
                self.answer(200, replica.name.encode())

        return Handler


@pytest.fixture
def replicas(http_target) -> Iterator[list[Replica]]:
    pair = [Replica("replica-a"), Replica("replica-b")]
    for replica in pair:
        replica.port = urlsplit(http_target(replica.handler())).port or 0
    yield pair
    for replica in pair:
        replica.release.set()


@pytest.fixture
def gateway(tmp_path: Path, replicas: list[Replica]) -> Iterator[str]:
    with gateway_running(tmp_path, [r.port for r in replicas]) as url:
        yield url


SESSIONS = [f"session-{i}" for i in range(12)]


def replicas_per_session(url: str, rounds: int = 4) -> dict[str, set[str]]:
    """Which replicas answered each session's requests, over several rounds."""
    seen: dict[str, set[str]] = {s: set() for s in SESSIONS}
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(rounds):
            for session in SESSIONS:
                answer = client.post("/run", json={}, headers={"x-session-affinity": session})
                assert answer.status_code == 200, answer.text
                seen[session].add(answer.text)
    return seen


def test_a_session_always_reaches_the_same_replica(gateway: str) -> None:
    seen = replicas_per_session(gateway)
    assert all(len(names) == 1 for names in seen.values()), seen
    # ... and the sessions are shared out between the replicas.
    assert set().union(*seen.values()) == {"replica-a", "replica-b"}, seen


def test_without_the_header_the_least_busy_replica_answers(gateway: str, replicas: list[Replica]) -> None:
    with httpx.Client(base_url=gateway, timeout=30) as client:
        # Both replicas answer requests without the header.
        assert {client.post("/run", json={}).text for _ in range(6)} == {"replica-a", "replica-b"}
        # One request held open on one replica: every quick request goes to the other one.
        held: list[str] = []
        holder = threading.Thread(target=lambda: held.append(client.post("/hold", json={}).text))
        holder.start()
        try:
            deadline = time.monotonic() + 20
            while not any(r.holding.is_set() for r in replicas):  # nginx counts it from then on
                assert time.monotonic() < deadline, "the held request reached no replica"
                time.sleep(0.05)
            quick = {httpx.post(f"{gateway}/run", json={}, timeout=30).text for _ in range(8)}
        finally:
            for replica in replicas:
                replica.release.set()
            holder.join(30)
        assert len(quick) == 1 and quick != set(held), (quick, held)


def test_a_broken_hash_key_is_caught(tmp_path: Path, replicas: list[Replica]) -> None:
    """The stickiness check above fails on a copy that hashes on something other than the header."""
    with gateway_running(
        tmp_path, [r.port for r in replicas], lambda s: s.replace("hash $http_x_session_affinity", "hash $request_id")
    ) as url:
        seen = replicas_per_session(url)
    assert any(len(names) > 1 for names in seen.values()), seen


def read_stream(url: str, replicas: list[Replica]) -> list[str]:
    events = []
    with httpx.stream("POST", f"{url}/stream", json={}, headers={"x-session-affinity": "s"}, timeout=60) as answer:
        for line in answer.iter_lines():
            if line.startswith("data: "):
                events.append(line.removeprefix("data: "))
                for replica in replicas:
                    replica.release.set()
    return events


def test_streamed_answers_pass_through_unbuffered(gateway: str, replicas: list[Replica]) -> None:
    assert read_stream(gateway, replicas) == ["first", "second"]
