import pytest
from transformers import AutoTokenizer

from server.config import load_settings
from server.engine.models import resolve_checkpoint
from tests.integration.server import DEFAULT_CONFIG, RunningServer, start_server

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


@pytest.fixture(scope="session")
def tokenizer():
    """The default model's own tokenizer, to count tokens independently of the server."""
    settings = load_settings(DEFAULT_CONFIG)
    return AutoTokenizer.from_pretrained(resolve_checkpoint(settings.models[0], settings.cache_dir))


def chat_prompt_tokens(tokenizer, messages) -> int:
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return len(tokenizer.encode(text, add_special_tokens=False))
