"""The AI Gateway logs API (api/gateway_logs.py) read through the cloudflare SDK and by hand, on the
SQLite store and on Postgres: logs written straight into the app's store, then listed with filters
on every kind of column, paged and counted, shown, their bodies fetched, PATCHed, deleted in bulk;
the count bound with both strategies, the age bound; no API key in any answer; Postgres down answers
503 / 3048."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from cloudflare import Cloudflare, NotFoundError
from fastapi import FastAPI
from fastapi.testclient import TestClient

from server import errors
from server.app import create_app
from server.serving.gateway_logs import GatewayLog, LogStore, new_log_id
from server.serving.gateways import Gateway
from tests.support.fakes import TEXT_MODEL, FakeEngines, fake_settings
from tests.support.stores import postgres_server, until_refused

KEY = "wai-logs-test-key-5f1c"
ACCOUNT = "acct"
GATEWAY = "logs-test"
LOGS = f"/client/v4/accounts/{ACCOUNT}/ai-gateway/gateways/{GATEWAY}/logs"
RETENTION_S = 3600.0


@dataclass
class LogsApp:
    """The app on the fakes in a TestClient, with every answer it gave kept for the key check."""

    app: FastAPI
    client: TestClient
    answers: list[Any]

    @property
    def store(self) -> LogStore:
        return self.app.state.gateway_logs

    def call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        """An async service call, made in the app's own event loop."""
        return self.client.portal.call(partial(function, *args, **kwargs))  # type: ignore[union-attr]

    def add(self, log: GatewayLog, keep_at_most: int = 1000, when_full: str = "DELETE_OLDEST") -> bool:
        return self.call(self.store.add, log, keep_at_most, when_full)

    def sdk(self) -> Cloudflare:
        http = httpx.Client(transport=ThroughTestClient(self.client))
        return Cloudflare(api_token=KEY, base_url="http://testserver/client/v4", http_client=http, max_retries=0)


class ThroughTestClient(httpx.BaseTransport):
    """The SDK's httpx requests, sent through the app's TestClient (whose own HTTP package differs)."""

    def __init__(self, client: TestClient):
        self.client = client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self.client.request(
            request.method, str(request.url), headers=list(request.headers.multi_items()), content=request.read()
        )
        return httpx.Response(answer.status_code, headers=list(answer.headers.multi_items()), content=answer.content)


@pytest.fixture(params=["sqlite", "postgres"])
def logs_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LogsApp]:
    shared = {}
    if request.param == "postgres":
        url = request.getfixturevalue("postgres").new_database()
        shared = {"database_url": url, "cluster": {"store_timeout_s": 2}}
    settings = fake_settings(tmp_path, api_keys=[KEY], gateways={"logs_retention_s": RETENTION_S}, **shared)
    app = create_app(settings, FakeEngines())
    answers: list[Any] = []
    with TestClient(app, headers={"Authorization": f"Bearer {KEY}"}) as client:
        client.event_hooks = {"request": [], "response": [lambda r: answers.append(r)]}
        served = LogsApp(app, client, answers)
        served.call(app.state.gateways.create, Gateway(GATEWAY))
        yield served
    for answer in answers:
        assert KEY not in answer.read().decode(errors="replace"), answer.request.url


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def a_log(created_at: float, gateway: str = GATEWAY, **fields: Any) -> GatewayLog:
    values: dict[str, Any] = {
        "id": new_log_id(created_at),
        "gateway_id": gateway,
        "created_at": created_at,
        "provider": "workers-ai",
        "model": TEXT_MODEL,
        "model_type": "text-generation",
        "path": f"workers-ai/{TEXT_MODEL}",
        "request_type": "workers-ai",
        "status_code": 200,
        "success": True,
        "cached": False,
        "duration_ms": 120,
        "tokens_in": 10,
        "tokens_out": 5,
        "tokens_cached": 2,
        "cost": 0.001,
        # A head written carelessly, with the key in it: never shown.
        "request_head": json.dumps({"content-type": "application/json", "authorization": f"Bearer {KEY}"}),
        "response_head": json.dumps({"content-type": "application/json"}),
        "request_body": b'{"prompt": "hi"}',
        "response_body": b'{"result": {"response": "hello"}}',
        "request_size": 16,
        "response_size": 33,
    }
    return GatewayLog(**{**values, **fields})


def seven_logs(logs: LogsApp) -> list[GatewayLog]:
    """Seven logs a second apart, oldest first: models a/b by turns, the 4th failed, the 3rd and 6th
    cached, tokens_in 0, 10, ..., 60; even ones for alice, odd ones for bob at tier 2; the 7th kept
    without payload."""
    start = time.time() - 100
    made = []
    for i in range(7):
        made.append(
            a_log(
                start + i,
                model="m-a" if i % 2 == 0 else "m-b",
                success=i != 3,
                status_code=500 if i == 3 else 200,
                cached=i in (2, 5),
                tokens_in=10 * i,
                cost=0.001 * (i + 1),
                metadata={"user": "alice"} if i % 2 == 0 else {"user": "bob", "tier": 2},
                request_body=None if i == 6 else b'{"prompt": "hi"}',
                response_body=None if i == 6 else b'{"result": {"response": "hello"}}',
            )
        )
        assert logs.add(made[-1])
    return made


def ids(logs: list[GatewayLog], *which: int) -> list[str]:
    return [logs[i].id for i in which]


def listed(sdk: Cloudflare, gateway: str = GATEWAY, **params: Any) -> list[str]:
    """Every page's ids, as the SDK's auto-pagination reads them."""
    return [log.id for log in sdk.ai_gateway.logs.list(gateway_id=gateway, account_id=ACCOUNT, **params)]


def test_logs_listed_through_the_sdk_by_filters_order_and_pages(logs_app):
    made = seven_logs(logs_app)
    sdk = logs_app.sdk()
    assert listed(sdk, per_page=3) == ids(made, 6, 5, 4, 3, 2, 1, 0)  # newest first, over three pages
    assert listed(sdk, per_page=2, order_by_direction="asc") == ids(made, 0, 1, 2, 3, 4, 5, 6)

    def filtered(*filters: dict[str, Any], **params: Any) -> list[str]:
        return listed(sdk, filters=list(filters), order_by_direction="asc", **params)

    assert filtered({"key": "model", "operator": "eq", "value": ["m-a"]}) == ids(made, 0, 2, 4, 6)
    assert filtered({"key": "model", "operator": "neq", "value": ["m-a"]}) == ids(made, 1, 3, 5)
    assert filtered({"key": "success", "operator": "eq", "value": [False]}) == ids(made, 3)
    assert filtered({"key": "cached", "operator": "eq", "value": [True]}) == ids(made, 2, 5)
    assert filtered({"key": "metadata.key", "operator": "eq", "value": ["tier"]}) == ids(made, 1, 3, 5)
    alice = [{"key": "metadata.key", "operator": "eq", "value": ["user"]}]
    alice.append({"key": "metadata.value", "operator": "eq", "value": ["alice"]})
    assert filtered(*alice) == ids(made, 0, 2, 4, 6)
    assert filtered({"key": "metadata.value", "operator": "eq", "value": ["2"]}) == ids(made, 1, 3, 5)  # a number
    between = [{"key": "tokens_in", "operator": "gt", "value": [20]}]
    between.append({"key": "tokens_in", "operator": "lt", "value": [60]})
    assert filtered(*between) == ids(made, 3, 4, 5)
    when = [{"key": "created_at", "operator": "gt", "value": [iso(made[1].created_at + 0.5)]}]
    when.append({"key": "created_at", "operator": "lt", "value": [iso(made[4].created_at + 0.5)]})
    assert filtered(*when) == ids(made, 2, 3, 4)
    assert filtered({"key": "model", "operator": "contains", "value": ["M-B"]}) == ids(made, 1, 3, 5)
    # The deprecated flat parameters, and the search.
    assert listed(sdk, success=True, model="m-b", order_by_direction="asc") == ids(made, 1, 5)
    assert listed(sdk, min_tokens_in=30, max_tokens_in=40, order_by_direction="asc") == ids(made, 3, 4)
    assert listed(sdk, search="BOB", order_by_direction="asc") == ids(made, 1, 3, 5)
    assert listed(sdk, order_by="cached", order_by_direction="desc")[:2] == ids(made, 5, 2)

    # By hand: `filters` as JSON (a scalar value), one page of two, with meta_info.
    answer = logs_app.client.get(
        LOGS,
        params={
            "filters": json.dumps([{"key": "model", "operator": "eq", "value": "m-a"}]),
            "per_page": 2,
            "page": 2,
            "meta_info": "true",
        },
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [log["id"] for log in body["result"]] == ids(made, 2, 0)
    info = body["result_info"]
    assert {k: info[k] for k in ("page", "per_page", "count", "total_count")} == {
        "page": 2,
        "per_page": 2,
        "count": 2,
        "total_count": 4,
    }
    assert (info["min_tokens_in"], info["max_tokens_in"], info["total_tokens_in"]) == (0, 60, 120)
    assert info["min_cost"] == pytest.approx(0.001) and info["max_cost"] == pytest.approx(0.007)
    assert info["total_cost"] == pytest.approx(0.001 + 0.003 + 0.005 + 0.007)
    assert (info["total_tokens_out"], info["total_tokens_cached"], info["max_total_tokens"]) == (20, 8, 65)
    assert "total_cost" not in logs_app.client.get(LOGS).json()["result_info"]  # only with meta_info
    far = logs_app.client.get(LOGS, params={"page": 10**19, "per_page": 50}).json()
    assert (far["result"], far["result_info"]["total_count"]) == ([], 7)  # past the last page: empty

    refused = logs_app.client.get(LOGS, params={"per_page": 51})
    assert refused.status_code == 400
    assert refused.json()["errors"][0] == {
        "code": 7001,
        "message": "Input Validation Error",
        "path": ["query", "per_page"],
    }


def test_one_log_its_bodies_and_its_feedback_through_the_sdk_and_the_binding(logs_app):
    made = seven_logs(logs_app)
    streamed = a_log(time.time(), response_content_type="text/event-stream", response_body=b"data: [DONE]\n\n")
    logs_app.add(streamed)
    sdk = logs_app.sdk()
    shown = sdk.ai_gateway.logs.get(made[1].id, account_id=ACCOUNT, gateway_id=GATEWAY)
    assert (shown.id, shown.model, shown.success, shown.duration, shown.tokens_in) == (made[1].id, "m-b", True, 120, 10)
    assert json.loads(shown.metadata or "") == {"user": "bob", "tier": 2}
    assert shown.ai_model_type == "text-generation" and shown.created_at.timestamp() == pytest.approx(
        made[1].created_at, abs=0.001
    )
    raw = logs_app.client.get(f"{LOGS}/{made[1].id}").json()["result"]
    for always in ("status_code", "request_size", "request_head_complete", "response_size", "response_head_complete"):
        assert raw[always] is not None, always
    assert json.loads(raw["request_head"]) == {"content-type": "application/json"}  # the key left out

    assert sdk.ai_gateway.logs.request(made[1].id, account_id=ACCOUNT, gateway_id=GATEWAY) == {"prompt": "hi"}
    answer = sdk.ai_gateway.logs.response(made[1].id, account_id=ACCOUNT, gateway_id=GATEWAY)
    assert answer == {"result": {"response": "hello"}}
    events = logs_app.client.get(f"{LOGS}/{streamed.id}/response")
    assert events.headers["content-type"].startswith("text/event-stream") and events.content == b"data: [DONE]\n\n"
    for part in ("request", "response"):  # kept without payload
        missing = logs_app.client.get(f"{LOGS}/{made[6].id}/{part}")
        assert (missing.status_code, missing.json()["errors"]) == (404, [{"code": 7002, "message": "Not Found"}])

    assert sdk.ai_gateway.logs.edit(made[1].id, account_id=ACCOUNT, gateway_id=GATEWAY, feedback=1) == {}
    assert listed(sdk, filters=[{"key": "feedback", "operator": "eq", "value": [1]}]) == ids(made, 1)
    assert logs_app.client.get(f"{LOGS}/{made[1].id}").json()["result"]["feedback"] == 1

    # The binding's getLog and patchLog: `{"result": log}`, its metadata an object.
    binding = f"/ai-gateway/gateways/{GATEWAY}/logs/{made[2].id}"
    patched = logs_app.client.patch(binding, json={"feedback": "-1", "score": 80, "metadata": {"reviewed": True}})
    assert patched.status_code == 200, patched.text
    log = logs_app.client.get(binding).json()["result"]
    assert (log["metadata"], log["feedback"], log["score"]) == ({"user": "alice", "reviewed": True}, -1, 80)
    assert listed(sdk, filters=[{"key": "metadata.key", "operator": "eq", "value": ["reviewed"]}]) == ids(made, 2)
    gone = logs_app.client.get(f"/ai-gateway/gateways/{GATEWAY}/logs/{new_log_id()}")
    assert (gone.status_code, gone.json()["errors"][0]["message"]) == (404, "Not Found")

    with pytest.raises(NotFoundError):
        sdk.ai_gateway.logs.get(new_log_id(), account_id=ACCOUNT, gateway_id=GATEWAY)
    with pytest.raises(NotFoundError):
        sdk.ai_gateway.logs.list(gateway_id="no-such-gateway", account_id=ACCOUNT)
    with pytest.raises(NotFoundError):
        sdk.ai_gateway.logs.edit(new_log_id(), account_id=ACCOUNT, gateway_id=GATEWAY, score=1)


def test_a_bulk_delete_takes_the_filtered_logs_in_order_up_to_its_limit(logs_app):
    made = seven_logs(logs_app)
    sdk = logs_app.sdk()
    model_a = [{"key": "model", "operator": "eq", "value": ["m-a"]}]
    deleted = sdk.ai_gateway.logs.delete(GATEWAY, account_id=ACCOUNT, filters=model_a, limit=2)
    assert deleted.success is True
    assert listed(sdk, order_by_direction="asc") == ids(made, 1, 3, 4, 5, 6)  # the two oldest of m-a
    by_cost = logs_app.client.delete(LOGS, params={"order_by": "cost", "order_by_direction": "desc", "limit": 1})
    assert by_cost.json()["success"] is True and by_cost.json()["result"] == {"deleted": 1}
    assert listed(sdk, order_by_direction="asc") == ids(made, 1, 3, 4, 5)
    # Deleting the gateway's logs leaves another gateway's alone.
    logs_app.call(logs_app.app.state.gateways.create, Gateway("other"))
    logs_app.add(a_log(time.time(), gateway="other"))
    logs_app.call(logs_app.store.delete_gateway, GATEWAY)
    assert listed(sdk) == []
    assert len(listed(sdk, gateway="other")) == 1


def test_the_count_bound_with_either_strategy_and_the_age_bound(logs_app):
    now = time.time()
    oldest_go = [a_log(now - 200 + 30 * i) for i in range(5)]
    assert [logs_app.add(log, keep_at_most=3, when_full="DELETE_OLDEST") for log in oldest_go] == [True] * 5
    sdk = logs_app.sdk()
    assert listed(sdk, order_by_direction="asc") == ids(oldest_go, 2, 3, 4)

    logs_app.call(logs_app.app.state.gateways.create, Gateway("full"))
    newest_refused = [a_log(now - 200 + 30 * i, gateway="full") for i in range(5)]
    kept = [logs_app.add(log, keep_at_most=3, when_full="STOP_INSERTING") for log in newest_refused]
    assert kept == [True, True, True, False, False]
    assert listed(sdk, gateway="full", order_by_direction="asc") == ids(newest_refused, 0, 1, 2)

    # Past the retention a log is no longer shown, and the next log written drops it for good.
    store = logs_app.store
    store.clock = lambda: now + RETENTION_S - 120  # type: ignore[attr-defined]
    assert listed(sdk, order_by_direction="asc") == ids(oldest_go, 3, 4)
    assert logs_app.client.get(f"{LOGS}/{oldest_go[2].id}").status_code == 404
    latest = a_log(now)
    logs_app.add(latest)
    store.clock = time.time  # type: ignore[attr-defined]
    assert listed(sdk, order_by_direction="asc") == [*ids(oldest_go, 3, 4), latest.id]


def test_postgres_down_answers_503_for_the_logs(tmp_path):
    with postgres_server() as server:
        url = server.new_database()
        declared = {"declared": [{"id": GATEWAY}]}  # known without the database
        settings = fake_settings(tmp_path, database_url=url, cluster={"store_timeout_s": 0.25}, gateways=declared)
        app = create_app(settings, FakeEngines())
        with TestClient(app) as client:
            served = LogsApp(app, client, [])
            kept = a_log(time.time())
            assert served.add(kept)
            server.stop()
            until_refused(url)
            for refused in (client.get(LOGS), client.get(f"{LOGS}/{kept.id}"), client.delete(LOGS)):
                assert refused.status_code == 503, refused.text
                assert refused.json()["errors"] == [
                    {"code": 3048, "message": "The gateway logs store is unavailable, please try again."}
                ]
            with pytest.raises(errors.WaiError) as failed:
                served.add(a_log(time.time()))
            assert failed.value.code == 3048
