import pytest

from tests.integration.server import RunningServer, start_server

API_KEYS = ["test-key-one", "test-key-two"]
BODY_LIMIT = 1_000_000


@pytest.fixture(scope="session")
def server() -> RunningServer:
    """One real server on the default model for the whole session, with two API keys."""
    running = start_server("server", api_keys=API_KEYS, env={"WAI_LIMITS__MAX_BODY_BYTES": str(BODY_LIMIT)})
    yield running
    running.stop()


@pytest.fixture
def client(server: RunningServer):
    with server.client() as c:
        yield c
