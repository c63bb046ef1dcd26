"""The servers several integration modules share (conftest.py starts them early), their settings, and
the requests they send them."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from tests.support.repo import ROOT, STAND_IN
from tests.support.servers import Prelaunched, RunningServer, launch_server, text_only_config

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
API_PROCESSES_DRAIN_S = 120  # the two-front-end server's (tests/integration/test_api_processes.py)
SMALL_KEYS = [
    {"name": "one-a-minute", "key": "rpm-key", "requests_per_minute": 1},
    {"name": "tuner", "sha256": hashlib.sha256(b"tuner-key").hexdigest(), "scopes": ["finetunes"]},
]


def launch_small(folder: Path) -> RunningServer:
    """The text model alone with LoRA off, two running slots (max_num_seqs 2) and four waiting places,
    so that a flood is cheap on a CPU, a KV cache of half a GiB (ample for two at a time: the memory
    goes to the suite's other servers), and the keys of SMALL_KEYS besides "small-key"."""
    model = {"lora": {"enabled": False}, "queue": {"max_waiting_requests": 4}}
    config = text_only_config(
        folder,
        model=model,
        engine={"max_num_seqs": 2, "kv_cache_gib": 0.5},
        limits={"drain_timeout_s": SMALL_DRAIN_TIMEOUT_S},
        keys=SMALL_KEYS,
    )
    return launch_server(
        "small-server", config=config, api_keys=["small-key"], env={"WAI_ADAPTERS_DIR": str(folder / "adapters")}
    )


def launch_two_front_ends(folder: Path) -> RunningServer:
    """The text model behind two front-end processes, with a small KV cache (the shared engine needs no more)."""
    config = text_only_config(folder, engine={"kv_cache_gib": 0.5}, limits={"drain_timeout_s": API_PROCESSES_DRAIN_S})
    return launch_server(
        "api-processes", config=config, env={"WAI_ADAPTERS_DIR": str(folder / "adapters")}, api_processes=2
    )


def launch_llama3(folder: Path) -> RunningServer:
    """The tiny Llama 3 model (or the config WAI_LLAMA3_CONFIG names), prepared first, its per-request
    timings on."""
    prepared = subprocess.run(
        [sys.executable, "-m", "server.cli", "prepare", "--config", str(llama3_config())],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    env = {"WAI_ADAPTERS_DIR": str(folder / "adapters"), "WAI_METRICS__PER_REQUEST": "true"}
    return launch_server("llama3", config=llama3_config(), env=env)


def llama3_config() -> Path:
    return ROOT / os.environ.get("WAI_LLAMA3_CONFIG", "configs/llama-3-tiny.yaml")


SMALL = Prelaunched("small", launch_small)
TWO_FRONT_ENDS = Prelaunched("api-processes", launch_two_front_ends)
LLAMA3 = Prelaunched("llama3", launch_llama3)


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
