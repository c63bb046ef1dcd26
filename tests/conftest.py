"""Settings for every test server this suite starts, and the fixtures every tier shares."""

import os
import resource
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler

import pytest

from tests.support.early import EarlyCommand, start_in_background
from tests.support.http_target import serving
from tests.support.stores import PostgresServer, RedisServer, postgres_server, redis_server

# Test servers share the machine's cores with each other and with the test process. On a small
# machine wai binds the model's OpenMP threads to every core (server/engine/cpu_env.py), which
# stalls when other processes hold those cores (docs/benchmarks.md, "The embedded default on a
# CPU"); vLLM's own binding, one core for the model, degrades gracefully there. The binding wai
# computes is tested in tests/unit/test_cpu_env.py.
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "auto")

# The slow-client tests hold 2,000 connections open, from this process to a server it starts: both need
# more file descriptors than a shell's usual 1,024. Raised as far as the hard limit allows.
_, hard_limit = resource.getrlimit(resource.RLIMIT_NOFILE)
wanted = 8192 if hard_limit == resource.RLIM_INFINITY else min(8192, hard_limit)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(wanted, resource.getrlimit(resource.RLIMIT_NOFILE)[0]), hard_limit))


@pytest.fixture
def http_target() -> Iterator[Callable[[type[BaseHTTPRequestHandler]], str]]:
    """Serve a canned handler for the test: `url = http_target(Handler)`; stopped when the test ends."""
    with ExitStack() as stack:
        yield lambda handler: stack.enter_context(serving(handler))


@pytest.hookimpl(trylast=True)  # after the tiers' own hooks, which may ask for starts to follow
def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the commands of the selected `early` tests (tests/support/early.py), in the tests' order,
    then what the tiers asked to start after them."""
    if session.config.option.collectonly:
        return
    commands: list[EarlyCommand] = []
    for item in session.items:
        for marker in item.iter_markers("early"):
            commands += [c for c in marker.args if c not in commands]
    start_in_background(commands)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private Postgres server for the whole run (tests/support/stores.py); `postgres.new_database()`
    gives a test a database of its own."""
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def redis_store() -> Iterator[RedisServer]:
    """A private Redis server for the whole run; tests that count in it flush it first."""
    with redis_server() as server:
        yield server
