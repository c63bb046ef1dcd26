"""The fuzz tier: the real app on fake engines (tests/support/fakes.py) over real HTTP, fed by schemathesis and
hypothesis. Seconds by default; `make fuzz` runs it long (WAI_FUZZ_EXAMPLES, WAI_FUZZ_PROPERTY_EXAMPLES,
fresh random cases: WAI_FUZZ_RANDOM) and writes a summary (tests/fuzz/report.py)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.fakes import fake_settings
from tests.support.servers import ServedApp, serve_app


@pytest.fixture(scope="session")
def fuzz_app(tmp_path_factory) -> Iterator[ServedApp]:
    with serve_app(fake_settings(tmp_path_factory.mktemp("wai-fuzz"))) as running:
        yield running


@pytest.fixture(scope="session")
def fuzz_client(fuzz_app: ServedApp) -> Iterator[httpx.Client]:
    with fuzz_app.client() as client:
        yield client


@pytest.fixture(autouse=True)
def fresh_engines(request: pytest.FixtureRequest) -> None:
    if "fuzz_app" in request.fixturenames:
        request.getfixturevalue("fuzz_app").engines.reset()
