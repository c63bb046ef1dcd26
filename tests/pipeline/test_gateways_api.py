"""The gateways API through the cloudflare SDK (`client.ai_gateway`), against the app on the fakes: create,
list (auto-paged), get, update, delete and a gateway's URL; its 404, 409 and 400 answers; declared
gateways read-only; the Workers binding's `getUrl`; and the same calls on Postgres, shared by two apps.
The wire format's own rules: tests/unit/test_gateway_objects.py; the service's: tests/unit/test_gateways.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudflare
import httpx
import pytest
from cloudflare import Cloudflare

from server.config import Settings
from tests.support.fakes import fake_settings
from tests.support.servers import ServedApp, serve_app

ACCOUNT = "0123456789abcdef"
GATEWAYS = f"/client/v4/accounts/{ACCOUNT}/ai-gateway/gateways"
DECLARED = {"id": "team-declared", "cache_ttl": 60, "rate_limiting_interval": 10, "rate_limiting_limit": 3}
MANAGEMENT_KEY, MODELS_KEY = "management-key", "models-only-key"


def settings(root: Path, **overrides: Any) -> Settings:
    keys = [
        {"name": "management", "key": MANAGEMENT_KEY},
        {"name": "models", "key": MODELS_KEY, "scopes": ["models"]},
    ]
    return fake_settings(root, keys=keys, gateways={"declared": [DECLARED]}, **overrides)


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[ServedApp]:
    with serve_app(settings(tmp_path_factory.mktemp("gateways"))) as running:
        yield running


@pytest.fixture(scope="module")
def http(served: ServedApp) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.base_url, headers={"Authorization": f"Bearer {MANAGEMENT_KEY}"}) as client:
        yield client


def sdk(served: ServedApp, max_retries: int = 0, http_client: httpx.Client | None = None) -> Cloudflare:
    return Cloudflare(
        api_token=MANAGEMENT_KEY,
        base_url=f"{served.base_url}/client/v4",
        max_retries=max_retries,
        http_client=http_client,
    )


def create(client: Cloudflare, gateway_id: str, **settings: Any) -> Any:
    required: dict[str, Any] = {
        "cache_invalidate_on_update": False,
        "cache_ttl": None,
        "collect_logs": True,
        "rate_limiting_interval": None,
        "rate_limiting_limit": None,
    }
    return client.ai_gateway.create(account_id=ACCOUNT, id=gateway_id, **{**required, **settings})


def error_of(response: httpx.Response, status: int, code: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert (body["success"], body["result"], len(body["errors"])) == (False, {}, 1)
    assert body["errors"][0]["code"] == code
    return body


def test_a_gateway_is_created_read_updated_and_deleted_through_the_sdk(served):
    client = sdk(served)
    made = create(client, "crud", cache_ttl=120, rate_limiting_technique="fixed", zdr=True)
    assert (made.id, made.cache_ttl, made.rate_limiting_technique, made.zdr) == ("crud", 120, "fixed", True)
    assert (made.account_id, made.account_tag, made.is_default) == (ACCOUNT, ACCOUNT, False)
    assert made.created_at.tzinfo is not None and made.internal_id
    assert client.ai_gateway.get("crud", account_id=ACCOUNT).to_dict() == made.to_dict()
    updated = client.ai_gateway.update(
        "crud",
        account_id=ACCOUNT,
        cache_invalidate_on_update=True,
        cache_ttl=None,
        collect_logs=False,
        rate_limiting_interval=60,
        rate_limiting_limit=100,
        retry_max_attempts=2,
    )
    assert (updated.cache_ttl, updated.collect_logs, updated.retry_max_attempts) == (None, False, 2)
    assert updated.zdr is False  # a replace: what the update left out is back to its default
    assert (updated.created_at, updated.internal_id) == (made.created_at, made.internal_id)
    assert updated.modified_at >= made.modified_at
    deleted = client.ai_gateway.delete("crud", account_id=ACCOUNT)
    assert (deleted.id, deleted.collect_logs) == ("crud", False)
    with pytest.raises(cloudflare.NotFoundError) as caught:
        client.ai_gateway.get("crud", account_id=ACCOUNT)
    assert caught.value.body["errors"] == [{"code": 7002, "message": "Not Found"}]


def test_an_unknown_gateway_is_404_7002_for_get_update_delete_and_url(http):
    body = {"cache_invalidate_on_update": False, "cache_ttl": 0, "collect_logs": True}
    body |= {"rate_limiting_interval": None, "rate_limiting_limit": None}
    for response in (
        http.get(f"{GATEWAYS}/nobody"),
        http.put(f"{GATEWAYS}/nobody", json=body),
        http.delete(f"{GATEWAYS}/nobody"),
        http.get(f"{GATEWAYS}/nobody/url/workers-ai"),
        http.get("/ai-gateway/gateways/nobody/url/workers-ai"),  # the binding reads `errors[0].message`
    ):
        assert error_of(response, 404, 7002)["errors"][0]["message"] == "Not Found"


def test_the_sdk_pages_through_every_gateway_and_a_page_past_the_last_is_empty(served, http):
    client = sdk(served)
    for number in range(5):
        create(client, f"paged-{number}")
    listed = client.ai_gateway.list(account_id=ACCOUNT, per_page=2, search="paged-")
    assert [gateway.id for gateway in listed] == [f"paged-{number}" for number in range(5)]  # 3 pages, then []
    past = http.get(GATEWAYS, params={"search": "paged-", "per_page": 2, "page": 4})
    assert past.status_code == 200
    assert past.json()["result"] == []
    assert past.json()["result_info"] == {"page": 4, "per_page": 2, "count": 0, "total_count": 5}
    first = http.get(GATEWAYS, params={"search": "paged-", "per_page": 2}).json()
    assert first["result_info"] == {"page": 1, "per_page": 2, "count": 2, "total_count": 5}
    for name, value in (("page", "0"), ("per_page", "101"), ("per_page", "x")):
        refused = error_of(http.get(GATEWAYS, params={name: value}), 400, 7001)
        assert refused["errors"][0]["path"] == ["query", name]


def test_a_duplicate_id_is_409_with_x_should_retry_false_and_the_sdk_does_not_retry_it(served):
    create(sdk(served), "twice")
    sent: list[httpx.Request] = []
    with httpx.Client(event_hooks={"request": [sent.append]}) as counting:
        with pytest.raises(cloudflare.ConflictError) as caught:
            create(sdk(served, max_retries=2, http_client=counting), "twice")
    assert len(sent) == 1
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert caught.value.body["errors"][0]["code"] == 7003


def test_a_bad_setting_is_400_7001_with_its_path_and_what_is_wrong(served):
    with pytest.raises(cloudflare.BadRequestError) as caught:
        create(sdk(served), "bad", retry_delay=5001)
    body = caught.value.body
    assert body["errors"] == [{"code": 7001, "message": "Input Validation Error", "path": ["body", "retry_delay"]}]
    assert "retry_delay" in body["messages"][0]["message"]
    assert "retry_delay" in str(caught.value)  # the SDK's message shows the body


def test_declared_gateways_are_listed_first_and_read_only(served, http):
    client = sdk(served)
    declared = client.ai_gateway.get(DECLARED["id"], account_id=ACCOUNT)
    assert (declared.cache_ttl, declared.rate_limiting_limit, declared.collect_logs) == (60, 3, True)
    assert next(iter(client.ai_gateway.list(account_id=ACCOUNT))).id == DECLARED["id"]
    with pytest.raises(cloudflare.ConflictError):
        create(client, DECLARED["id"])
    body = {"cache_invalidate_on_update": False, "cache_ttl": 0, "collect_logs": True}
    body |= {"rate_limiting_interval": None, "rate_limiting_limit": None}
    error_of(http.put(f"{GATEWAYS}/{DECLARED['id']}", json=body), 400, 7001)
    error_of(http.delete(f"{GATEWAYS}/{DECLARED['id']}"), 400, 7001)
    assert client.ai_gateway.get(DECLARED["id"], account_id=ACCOUNT).cache_ttl == 60


def test_default_is_made_on_its_first_request_as_cloudflares_is(served):
    client = sdk(served)
    with pytest.raises(cloudflare.NotFoundError):
        client.ai_gateway.get("default", account_id=ACCOUNT)
    asyncio.run(served.app.state.gateways.for_request("default"))  # as a request through it does
    made = client.ai_gateway.get("default", account_id=ACCOUNT)
    assert (made.is_default, made.cache_ttl, made.collect_logs) == (True, 0, True)


def test_a_gateways_url_for_the_sdk_and_for_the_workers_binding(served, http):
    client = sdk(served)
    create(client, "with-url")
    url = client.ai_gateway.urls.get("workers-ai", account_id=ACCOUNT, gateway_id="with-url")
    assert url == f"{served.base_url}/v1/{ACCOUNT}/with-url/workers-ai"
    binding = http.get("/ai-gateway/gateways/with-url/url/openai").json()
    assert binding["result"] == {"url": f"{served.base_url}/v1/local/with-url/openai"}
    forwarded = http.get(
        f"/client/v4/accounts/{ACCOUNT}/ai/run/proxy",
        headers={"X-Forwarded": "https://workers-binding.ai/ai-gateway/gateways/with-url/url/openai"},
    )
    assert forwarded.json()["result"] == {"url": f"{served.base_url}/v1/{ACCOUNT}/with-url/openai"}
    # `default` has a URL before its first use makes it.
    assert http.get(f"{GATEWAYS}/default/url/workers-ai").status_code == 200


def test_the_gateways_api_needs_a_management_key(served):
    for headers in ({}, {"Authorization": f"Bearer {MODELS_KEY}"}):
        error_of(httpx.get(f"{served.base_url}{GATEWAYS}", headers=headers), 401, 10000)


def test_openapi_documents_the_gateway_routes(http):
    document = http.get("/openapi.json").json()
    assert {"get", "post"} <= set(document["paths"][GATEWAYS.replace(ACCOUNT, "{account_id}")])
    assert "GatewayCreate" in document["components"]["schemas"]
    assert "/ai-gateway/gateways/{gateway_id}/url/{provider}" not in document["paths"]


def test_gateways_on_postgres_are_shared_by_every_app_on_the_database(postgres, tmp_path):
    url = postgres.new_database()
    with (
        serve_app(settings(tmp_path / "a", database_url=url)) as a,
        serve_app(settings(tmp_path / "b", database_url=url)) as b,
    ):
        through_a, through_b = sdk(a), sdk(b)
        made = create(through_a, "shared", cache_ttl=30, guardrails={"prompt": {}, "response": {}})
        assert through_b.ai_gateway.get("shared", account_id=ACCOUNT).to_dict() == made.to_dict()
        for number in range(3):
            create(through_b, f"shared-{number}")
        listed = [g.id for g in through_a.ai_gateway.list(account_id=ACCOUNT, per_page=2, search="shared")]
        assert listed == ["shared", "shared-0", "shared-1", "shared-2"]
        assert [g.id for g in through_a.ai_gateway.list(account_id=ACCOUNT)][0] == DECLARED["id"]
        with pytest.raises(cloudflare.ConflictError):
            create(through_b, "shared")
        updated = through_b.ai_gateway.update(
            "shared",
            account_id=ACCOUNT,
            cache_invalidate_on_update=False,
            cache_ttl=90,
            collect_logs=True,
            rate_limiting_interval=None,
            rate_limiting_limit=None,
        )
        assert through_a.ai_gateway.get("shared", account_id=ACCOUNT).to_dict() == updated.to_dict()
        assert (updated.cache_ttl, updated.created_at) == (90, made.created_at)
        assert through_a.ai_gateway.delete("shared", account_id=ACCOUNT).cache_ttl == 90
        with pytest.raises(cloudflare.NotFoundError):
            through_b.ai_gateway.get("shared", account_id=ACCOUNT)
        first = asyncio.run(a.app.state.gateways.for_request("default"))
        assert asyncio.run(b.app.state.gateways.for_request("default")).internal_id == first.internal_id
