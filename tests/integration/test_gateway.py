"""The AI Gateway on the real engine: the cloudflare SDK's gateway and logs calls, the cache (a hit is
no engine request), a timeout that aborts its engine request, a fallback, and retries past overload.

The same behaviour on the fake engines, with failures on cue: tests/pipeline/test_gateway_requests.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import uuid

import httpx
import pytest
from cloudflare import Cloudflare, NotFoundError

from tests.support.repo import STAND_IN
from tests.support.sse import events
from tests.support.waiting import wait_for

ACCOUNT = "test-account"
ENGINE_REQUESTS = "vllm:request_success_total"
PADDING = re.compile(rb',"p":"[^"]*"')


@pytest.fixture
def cf(server):
    with Cloudflare(api_token=server.api_key, base_url=server.base_url + "/client/v4", max_retries=0) as client:
        yield client


@pytest.fixture
def gateway_id(cf):
    """A gateway made through the SDK for one test, deleted after it."""
    made = f"it-{uuid.uuid4().hex[:10]}"
    cf.ai_gateway.create(
        account_id=ACCOUNT,
        id=made,
        cache_invalidate_on_update=False,
        cache_ttl=300,
        collect_logs=True,
        rate_limiting_interval=0,
        rate_limiting_limit=0,
        rate_limiting_technique="fixed",
    )
    yield made
    try:
        cf.ai_gateway.delete(made, account_id=ACCOUNT)
    except NotFoundError:
        pass  # the test deleted it


def run_url(server, gateway: str, model: str = STAND_IN) -> str:
    return f"{server.base_url}/v1/{ACCOUNT}/{gateway}/workers-ai/{model}"


def test_the_sdks_gateway_calls(cf, gateway_id):
    got = cf.ai_gateway.get(gateway_id, account_id=ACCOUNT)
    assert (got.id, got.cache_ttl, got.collect_logs) == (gateway_id, 300, True)
    updated = cf.ai_gateway.update(
        gateway_id,
        account_id=ACCOUNT,
        cache_invalidate_on_update=True,
        cache_ttl=600,
        collect_logs=True,
        rate_limiting_interval=60,
        rate_limiting_limit=100,
        rate_limiting_technique="sliding",
    )
    assert (updated.cache_ttl, updated.rate_limiting_technique) == (600, "sliding")
    assert gateway_id in [gateway.id for gateway in cf.ai_gateway.list(account_id=ACCOUNT, per_page=1)]
    url = cf.ai_gateway.urls.get("workers-ai", account_id=ACCOUNT, gateway_id=gateway_id)
    assert url.endswith(f"/v1/{ACCOUNT}/{gateway_id}/workers-ai")
    cf.ai_gateway.delete(gateway_id, account_id=ACCOUNT)
    with pytest.raises(NotFoundError):
        cf.ai_gateway.get(gateway_id, account_id=ACCOUNT)


def test_a_repeated_request_is_a_hit_with_the_same_content_and_no_engine_request(server, gateway_id):
    body = {"prompt": f"Name a city. {gateway_id}", "max_tokens": 8}
    with server.client() as client:
        first = client.post(run_url(server, gateway_id), json=body)
        engine_before = server.metric(ENGINE_REQUESTS)
        again = client.post(run_url(server, gateway_id), json=body)
        assert server.metric(ENGINE_REQUESTS) == engine_before, "a hit costs the engine nothing"
        assert (first.headers["cf-aig-cache-status"], again.headers["cf-aig-cache-status"]) == ("MISS", "HIT")
        assert again.json() == first.json() and first.json()["result"]["response"]

        streamed = {**body, "stream": True}
        first_stream = client.post(run_url(server, gateway_id), json=streamed)
        engine_before = server.metric(ENGINE_REQUESTS)
        again_stream = client.post(run_url(server, gateway_id), json=streamed)
        assert server.metric(ENGINE_REQUESTS) == engine_before
        assert again_stream.headers["cf-aig-cache-status"] == "HIT"
        assert PADDING.sub(b"", again_stream.content) == PADDING.sub(b"", first_stream.content)
        assert events(again_stream)[-1] == "[DONE]"

        skipped = client.post(run_url(server, gateway_id), json=body, headers={"cf-aig-skip-cache": "true"})
        other = client.post(run_url(server, gateway_id), json={**body, "max_tokens": 7})
        assert [answer.headers["cf-aig-cache-status"] for answer in (skipped, other)] == ["MISS", "MISS"]


def test_the_sdks_logs_calls_page_filter_and_hide_the_key(cf, server, gateway_id):
    with server.client() as client:
        for index in range(3):
            headers = {"cf-aig-metadata": json.dumps({"user": f"u{index % 2}"}), "cf-aig-skip-cache": "true"}
            answer = client.post(run_url(server, gateway_id), json={"prompt": "Hi", "max_tokens": 3}, headers=headers)
            assert answer.status_code == 200, answer.text
        quiet = client.post(
            run_url(server, gateway_id),
            json={"prompt": "Hi", "max_tokens": 3},
            headers={"cf-aig-collect-log-payload": "false", "cf-aig-skip-cache": "true"},
        )
    logs = list(cf.ai_gateway.logs.list(gateway_id, account_id=ACCOUNT, per_page=2))
    assert len(logs) == 4 and all(log.model == STAND_IN and log.success for log in logs)
    assert sum(log.tokens_out or 0 for log in logs) >= 4
    of_u1 = cf.ai_gateway.logs.list(
        gateway_id,
        account_id=ACCOUNT,
        filters=[{"key": "metadata.value", "operator": "eq", "value": ["u1"]}],
    )
    assert len(list(of_u1)) == 1
    newest = cf.ai_gateway.logs.get(logs[0].id, account_id=ACCOUNT, gateway_id=gateway_id)
    assert newest.id == quiet.headers["cf-aig-log-id"]
    with pytest.raises(NotFoundError):
        cf.ai_gateway.logs.request(newest.id, account_id=ACCOUNT, gateway_id=gateway_id)
    kept = cf.ai_gateway.logs.request(logs[1].id, account_id=ACCOUNT, gateway_id=gateway_id)
    assert kept == {"prompt": "Hi", "max_tokens": 3}
    cf.ai_gateway.logs.edit(logs[1].id, account_id=ACCOUNT, gateway_id=gateway_id, feedback=1)
    assert cf.ai_gateway.logs.get(logs[1].id, account_id=ACCOUNT, gateway_id=gateway_id).feedback == 1
    with server.client() as client:
        everything = json.dumps(
            [client.get(f"/client/v4/accounts/{ACCOUNT}/ai-gateway/gateways/{gateway_id}/logs").json()]
        )
    assert server.api_key not in everything
    assert cf.ai_gateway.logs.delete(gateway_id, account_id=ACCOUNT).success
    assert list(cf.ai_gateway.logs.list(gateway_id, account_id=ACCOUNT)) == []


def test_a_timeout_to_the_first_byte_aborts_the_engine_request(server, gateway_id):
    long = {"prompt": "Write a very long story.", "max_tokens": 2000, "temperature": 2, "seed": 3}
    answer = httpx.post(
        run_url(server, gateway_id),
        json=long,
        headers={
            "Authorization": f"Bearer {server.api_key}",
            "cf-aig-request-timeout": "300",
            "cf-aig-skip-cache": "true",
        },
        timeout=120,
    )
    assert answer.status_code == 408 and answer.json()["errors"][0]["code"] == 3007
    assert server.engine_running() == 0, "the attempt's engine request is aborted"


def test_the_universal_endpoint_falls_back_past_a_step_that_times_out(server, gateway_id):
    slow = {"prompt": "Write a very long story.", "max_tokens": 2000, "temperature": 2, "seed": 3}
    steps = [
        {
            "provider": "workers-ai",
            "endpoint": STAND_IN,
            "headers": {},
            "query": slow,
            "config": {"requestTimeout": 200},
        },
        {"provider": "workers-ai", "endpoint": STAND_IN, "headers": {}, "query": {"prompt": "Hi", "max_tokens": 4}},
    ]
    with server.client() as client:
        answer = client.post(f"/v1/{ACCOUNT}/{gateway_id}", json=steps, headers={"cf-aig-skip-cache": "true"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["cf-aig-step"] == "1" and answer.json()["result"]["response"]


def test_retries_carry_a_request_past_overload(small_server):
    """The small server's two running slots held by long streams: a request that asks to be refused
    while the engine is busy (`rejectIfBusy`) is tried again until the streams end, then answered."""
    long = {"prompt": "Write a very long story.", "max_tokens": 4000, "temperature": 2, "seed": 3, "stream": True}
    key = {"Authorization": "Bearer small-key"}
    release = threading.Event()
    retries_before = small_server.metric("wai_gateway_retries_total")

    async def hold_the_running_slots() -> None:
        async with httpx.AsyncClient(base_url=small_server.base_url, headers=key, timeout=300) as client:

            async def stream() -> None:
                async with client.stream("POST", small_server.run_url(), json=long) as response:
                    assert response.status_code == 200
                    async for _ in response.aiter_bytes():
                        if release.is_set():
                            return

            await asyncio.gather(stream(), stream())

    holder = threading.Thread(target=asyncio.run, args=(hold_the_running_slots(),))
    holder.start()
    result: dict[str, httpx.Response] = {}
    try:
        wait_for(lambda: small_server.metric("vllm:num_requests_running") >= 2, "both running slots taken", 120)
        headers = {**key, "cf-aig-max-attempts": "5", "cf-aig-retry-delay": "1000", "cf-aig-backoff": "constant"}
        body = {"prompt": "Hi", "max_tokens": 4, "options": {"rejectIfBusy": True}}
        asking = threading.Thread(
            target=lambda: result.update(
                answer=httpx.post(run_url(small_server, "default"), json=body, headers=headers, timeout=120)
            )
        )
        asking.start()
        wait_for(lambda: small_server.metric("wai_gateway_retries_total") > retries_before, "a retry", 60)
        release.set()
        asking.join(timeout=120)
    finally:
        release.set()
        holder.join(timeout=120)
    answer = result["answer"]
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"]["response"]
