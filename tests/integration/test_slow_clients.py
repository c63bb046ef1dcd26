"""Slow and hostile clients against the session server, on the real engine (its short limits:
SESSION_LIMITS in session.py): 2,000 connections that never finish their heads while ordinary requests go
on answering, each closed by the header timeout; a body that stops, 408; a 64 KB head, 431; one address
past its connection cap refused while another is served; a fine-tune upload slower than the body timeout
in all, not cut. The defences themselves, with their edge cases: tests/pipeline/test_connections.py."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx

from tests.integration.session import SESSION_LIMITS, finetunes_url
from tests.support.metrics import scrape
from tests.support.raw_http import closed_within, exchange, held_connections, request_head
from tests.support.repo import STAND_IN
from tests.support.servers import RunningServer

SLOW_HEADS = 2000
ORDINARY = {"prompt": "Say hi.", "max_tokens": 1}


def ordinary_seconds(server: RunningServer, client: httpx.Client, count: int = 5) -> list[float]:
    took = []
    for _ in range(count):
        began = time.monotonic()
        response = client.post(server.run_url(), json=ORDINARY)
        assert response.status_code == 200, response.text
        took.append(time.monotonic() - began)
    return took


def test_2000_slow_heads_leave_ordinary_requests_answering_and_are_all_closed_by_the_timeout(server):
    per_address = SESSION_LIMITS["max_connections_per_client"] - 4
    sources = [f"127.0.3.{n}" for n in range(1, SLOW_HEADS // per_address + 2)]
    before = scrape(server).value("wai_http_refusals_total", reason="header_timeout")
    with server.client() as client:
        unloaded = statistics.median(ordinary_seconds(server, client))
        opened = time.monotonic()
        with held_connections(server.base_url, SLOW_HEADS, sources, b"POST / HTTP/1.1\r\nHost: wai\r\nX-A: b") as held:
            assert time.monotonic() - opened < SESSION_LIMITS["header_timeout_s"], "opened too slowly to test"
            loaded = ordinary_seconds(server, client)
            closed = asyncio.run(closed_within(held, timeout=SESSION_LIMITS["header_timeout_s"] + 20))
    print(f"ordinary request: {unloaded:.3f} s alone, {statistics.median(loaded):.3f} s beside {SLOW_HEADS} slow heads")
    assert max(loaded) < max(1.0, 2 * unloaded)
    assert all(closed), f"{closed.count(False)} slow connections still open"
    assert scrape(server).value("wai_http_refusals_total", reason="header_timeout") >= before + SLOW_HEADS


def test_a_body_that_stops_gets_408_in_the_envelope(server):
    head = request_head(
        "POST",
        urlsplit(server.run_url()).path,
        {"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json", "Content-Length": "1000"},
    )
    reply = exchange(server.base_url, head + b'{"prompt": "Hi"')
    assert reply.status == 408 and reply.json()["errors"] == [{"code": 3007, "message": "Request timeout"}]
    assert SESSION_LIMITS["body_timeout_s"] - 0.5 < reply.seconds < SESSION_LIMITS["body_timeout_s"] + 10


def test_a_64_kb_head_gets_431(server):
    reply = exchange(server.base_url, request_head("GET", "/v1/models", {"X-Big": "a" * 64 * 1024}))
    assert reply.status == 431 and reply.json()["error"]["code"] == "3006"


def test_one_address_past_its_cap_is_refused_while_another_is_served(server):
    cap = SESSION_LIMITS["max_connections_per_client"]
    with held_connections(server.base_url, cap, ["127.0.4.1"]):
        refused = exchange(server.base_url, request_head("GET", "/healthz"), source="127.0.4.1")
        assert refused.status == 503 and refused.header("retry-after")
        with server.client() as client:
            assert client.post(server.run_url(), json=ORDINARY).status_code == 200


def slowly(parts: list[bytes], bytes_per_second: int, chunk: int = 32 * 1024) -> Iterator[bytes]:
    for part in parts:
        for start in range(0, len(part), chunk):
            time.sleep(chunk / bytes_per_second)
            yield part[start : start + chunk]


def test_a_fine_tune_upload_slower_than_the_body_timeout_in_all_is_not_cut(server, meow_adapter):
    weights = (meow_adapter / "adapter_model.safetensors").read_bytes()
    rate = len(weights) // int(SESSION_LIMITS["body_timeout_s"] * 1.5)  # 1.5 body timeouts in all
    with server.client(timeout=120) as client:
        created = client.post(finetunes_url(), json={"model": STAND_IN, "name": "slow-upload"})
        assert created.status_code == 200, created.text
        boundary = "wai-slow-upload"
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="file_name"\r\n\r\nadapter_model.safetensors\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="adapter_model.safetensors"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode(),
            weights,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
        began = time.monotonic()
        uploaded = client.post(
            finetunes_url("/slow-upload/finetune-assets"),
            content=slowly(parts, rate),
            headers={
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Content-Length": str(sum(map(len, parts))),
            },
        )
        assert uploaded.status_code == 200, uploaded.text
        assert time.monotonic() - began > SESSION_LIMITS["body_timeout_s"]
        assert client.delete(finetunes_url("/slow-upload")).status_code == 200
