"""The settings of the servers several integration modules share (conftest.py), and the requests they
send them."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.support.repo import STAND_IN

API_KEYS = ["test-key-one", "test-key-two"]
BODY_LIMIT = 1_000_000
BATCH_MAX_ITEMS = 8
BATCH_MAX_PAYLOAD_BYTES = 16_384
UPLOAD_LIMIT = 4 * 1024 * 1024  # the test adapter's weights are about 1.8 MB
# The connection's defences, short so that slow clients are quick to test (tests/integration/test_slow_clients.py);
# the cap per address stays above what any test sends at once from 127.0.0.1.
SESSION_LIMITS = {"header_timeout_s": 5, "body_timeout_s": 5, "max_connections_per_client": 64}

# The small server's: its drain timeout, and its keys beside the plain key "small-key".
SMALL_DRAIN_TIMEOUT_S = 20
SMALL_KEYS = [
    {"name": "one-a-minute", "key": "rpm-key", "requests_per_minute": 1},
    {"name": "tuner", "sha256": hashlib.sha256(b"tuner-key").hexdigest(), "scopes": ["finetunes"]},
]


def finetunes_url(path: str = "") -> str:
    return f"/client/v4/accounts/test-account/ai/finetunes{path}"


def upload_finetune(client, name: str, folder: Path, model: str = STAND_IN) -> dict:
    created = client.post(finetunes_url(), json={"model": model, "name": name, "description": "says MEOW"})
    assert created.status_code == 200, created.text
    finetune = created.json()["result"]
    for file_name in ("adapter_config.json", "adapter_model.safetensors"):
        with (folder / file_name).open("rb") as file:
            uploaded = client.post(
                finetunes_url(f"/{finetune['id']}/finetune-assets"),
                data={"file_name": file_name},
                files={"file": (file_name, file)},
            )
        assert uploaded.status_code == 200, uploaded.text
    return finetune


def chat_prompt_tokens(tokenizer, messages) -> int:
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return len(tokenizer.encode(text, add_special_tokens=False))
