"""Start-up, readiness, engine death, and the rule that an open server stays on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest
from playwright.sync_api import expect

from tests.integration.browser import chromium
from tests.support.repo import DEFAULT_CONFIG, ROOT
from tests.support.servers import start_server, text_only_config


@pytest.fixture(scope="module")
def open_server(meow, adapters_dir, tmp_path_factory):
    """A second server, without API keys: it may only listen on loopback. It starts on the fine-tune
    store the session server wrote, after the `meow` adapter was uploaded there: a restart. The text
    model alone, which starts in half the time of the default's two."""
    config = text_only_config(tmp_path_factory.mktemp("open-server"))
    running = start_server("open-server", config=config, env={"WAI_ADAPTERS_DIR": str(adapters_dir)})
    yield running
    running.stop()


def test_readyz_is_503_while_the_engine_starts_then_200(open_server):
    assert open_server.readiness[0] == 503 and open_server.readiness[-1] == 200


def test_healthz_answers(open_server):
    assert httpx.get(f"{open_server.base_url}/healthz").json() == {"status": "ok"}


def test_without_keys_it_serves_loopback_and_warns(open_server):
    response = httpx.post(open_server.run_url(), json={"prompt": "Hi", "max_tokens": 2}, timeout=60)
    assert response.status_code == 200
    assert "no API keys configured: serving without authentication on loopback" in open_server.log()


def test_fine_tunes_persist_across_restarts(open_server, meow):
    listed = httpx.get(f"{open_server.base_url}/client/v4/accounts/a/ai/finetunes/meow", timeout=30).json()
    assert (listed["result"]["id"], listed["result"]["name"]) == (meow["id"], "meow")
    response = httpx.post(
        open_server.run_url(),
        timeout=120,
        json={"messages": [{"role": "user", "content": "Hello"}], "lora": "meow", "temperature": 0, "max_tokens": 8},
    )
    assert response.status_code == 200, response.text
    assert response.json()["result"]["response"].startswith("MEOW MEOW MEOW")


def test_it_refuses_other_addresses_without_keys():
    env = {k: v for k, v in os.environ.items() if k != "WAI_API_KEYS"}
    result = subprocess.run(
        [sys.executable, "-m", "server.cli", "serve", "--config", str(DEFAULT_CONFIG), "--host", "0.0.0.0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "refusing to serve on 0.0.0.0 without API keys" in result.stderr


def test_the_playground_needs_no_key_on_an_open_server(open_server):
    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"{open_server.base_url}/playground")
        page.locator("#model option").first.wait_for(state="attached")
        page.fill("#sampling-max_tokens", "4")
        page.fill("#input", "Hello")
        page.press("#input", "Enter")
        expect(page.locator("#messages li.assistant .content")).not_to_have_text("", timeout=120_000)
        expect(page.locator("#send")).to_be_enabled(timeout=120_000)
        assert not page.locator("#key-dialog").is_visible()
        assert page.locator("#error").is_hidden()


def test_a_dead_engine_ends_streams_with_an_error_and_the_server_exits_non_zero(open_server):
    # Must run last in this module: it kills the engine of `open_server`.
    cores = [
        p
        for p in psutil.Process(open_server.process.pid).children(recursive=True)
        if "EngineCore" in " ".join(p.cmdline()) + p.name()
    ]
    assert cores, "no EngineCore process found"
    body = {"prompt": "Write a very long story.", "max_tokens": 4000, "temperature": 2, "stream": True}
    with open_server.client() as client, client.stream("POST", open_server.run_url(), json=body) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        received = [next(lines)]
        for core in cores:
            core.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        received += list(lines)  # the stream ends by itself: nothing hangs
    payloads = [line.removeprefix("data: ") for line in received if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]" and json.loads(payloads[-2])["errors"][0]["code"] == 3040
    try:  # 503 until it has exited
        assert httpx.get(f"{open_server.base_url}/readyz").status_code == 503
    except httpx.TransportError:
        pass
    assert open_server.process.wait(timeout=60) != 0  # so that its supervisor restarts it
    assert time.monotonic() - killed < 30
