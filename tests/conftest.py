"""Settings for every test server this suite starts, and the fixtures every tier shares."""

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler

import pytest

from tests.support.http_target import serving

# Test servers share the machine's cores with each other and with the test process. On a small
# machine wai binds the model's OpenMP threads to every core (server/engine/cpu_env.py), which
# stalls when other processes hold those cores (docs/benchmarks.md, "The embedded default on a
# CPU"); vLLM's own binding, one core for the model, degrades gracefully there. The binding wai
# computes is tested in tests/unit/test_cpu_env.py.
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "auto")


@pytest.fixture
def http_target() -> Iterator[Callable[[type[BaseHTTPRequestHandler]], str]]:
    """Serve a canned handler for the test: `url = http_target(Handler)`; stopped when the test ends."""
    with ExitStack() as stack:
        yield lambda handler: stack.enter_context(serving(handler))
