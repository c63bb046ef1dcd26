"""The pipeline tier: the real app over real HTTP, on fake engines (tests/support/fakes.py), without vLLM.

One server for the whole tier; every test starts from fresh engines (default script, no delay,
no failure, ready, nothing recorded). Metrics live in prometheus_client's process-wide registry,
so tests compare scrapes taken before and after, never absolute counter values.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.fakes import FakeEmbeddingEngine, FakeTextEngine, fake_settings
from tests.support.servers import ServedApp, serve_app


@pytest.fixture(scope="session")
def served(tmp_path_factory) -> Iterator[ServedApp]:
    with serve_app(fake_settings(tmp_path_factory.mktemp("wai"))) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_engines(served: ServedApp) -> None:
    served.engines.reset()


@pytest.fixture(scope="session")
def client(served: ServedApp) -> Iterator[httpx.Client]:
    """One client for the tier: making one costs more than most tests (its SSL context)."""
    with served.client() as c:
        yield c


@pytest.fixture
def engine(served: ServedApp) -> FakeTextEngine:
    return served.text_engine


@pytest.fixture
def embedder(served: ServedApp) -> FakeEmbeddingEngine:
    return served.embedding_engine
