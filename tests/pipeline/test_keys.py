"""Per-key settings over HTTP: keys as digests, scopes, requests per minute and requests in flight,
each refusal in its protocol's format."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator

import pytest

from tests.pipeline.requests import CHAT, QUESTION, run_path
from tests.support.fakes import TEXT_MODEL, fake_settings
from tests.support.servers import ServedApp, serve_app

KEYS = [
    {"name": "digest", "sha256": hashlib.sha256(b"secret-in-digest").hexdigest()},
    {"name": "slow", "key": "two-a-minute", "requests_per_minute": 2},
    {"name": "single", "key": "one-at-a-time", "max_concurrent": 1},
    {"name": "tuner", "key": "finetunes-only", "scopes": ["finetunes"]},
]


@pytest.fixture(scope="module")
def keyed(tmp_path_factory) -> Iterator[ServedApp]:
    settings = fake_settings(tmp_path_factory.mktemp("keyed"), api_keys=["plain"], keys=KEYS)
    with serve_app(settings) as served:
        yield served


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_key_given_as_its_digest_opens_the_api(keyed):
    with keyed.client() as client:
        assert client.post(run_path(), json={"prompt": "Hi"}, headers=bearer("secret-in-digest")).status_code == 200
        assert client.post(run_path(), json={"prompt": "Hi"}, headers=bearer("plain")).status_code == 200
        refused = client.post(run_path(), json={"prompt": "Hi"}, headers=bearer(KEYS[0]["sha256"]))
        assert refused.status_code == 401 and refused.json()["errors"][0]["code"] == 10000


def test_a_scoped_key_opens_only_its_part(keyed):
    with keyed.client() as client:
        finetunes = "/client/v4/accounts/a/ai/finetunes"
        assert client.get(finetunes, headers=bearer("finetunes-only")).status_code == 200
        assert client.post(run_path(), json={"prompt": "Hi"}, headers=bearer("finetunes-only")).status_code == 401
        chat = client.post(CHAT, json={"model": TEXT_MODEL, "messages": QUESTION}, headers=bearer("finetunes-only"))
        assert chat.status_code == 401 and chat.json()["error"]["code"] == "invalid_api_key"


def test_requests_per_minute(keyed):
    with keyed.client() as client:
        statuses = [client.post(run_path(), json={"prompt": "Hi"}, headers=bearer("two-a-minute")) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert statuses[2].json()["errors"][0]["code"] == 3040 and 1 <= int(statuses[2].headers["retry-after"]) <= 30


def test_requests_in_flight(keyed):
    keyed.text_engine.delay = 0.2

    async def two_at_once() -> list[int]:
        async with keyed.async_client(timeout=30) as client:
            body = {"model": TEXT_MODEL, "messages": QUESTION}
            sent = [client.post(CHAT, json=body, headers=bearer("one-at-a-time")) for _ in range(2)]
            return sorted(response.status_code for response in await asyncio.gather(*sent))

    assert asyncio.run(two_at_once()) == [200, 429]
    keyed.text_engine.delay = 0.0
    with keyed.client() as client:  # its place was given back
        assert client.post(run_path(), json={"prompt": "Hi"}, headers=bearer("one-at-a-time")).status_code == 200
