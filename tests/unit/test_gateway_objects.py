"""The gateways API's wire format (server/protocol/gateway_objects.py): what a create or update body may
hold, the 400 / 7001 with the field's path for each mistake, and a gateway rendered as Cloudflare's object."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest

from server import errors
from server.protocol import gateway_objects, workers_ai
from server.protocol.gateway_objects import parse_create, parse_update, render
from server.serving.gateways import Gateway

# What the cloudflare SDK's `ai_gateway.create` sends when given only its required arguments.
SDK_REQUIRED: dict[str, Any] = {
    "id": "my-gateway",
    "cache_invalidate_on_update": False,
    "cache_ttl": None,
    "collect_logs": True,
    "rate_limiting_interval": None,
    "rate_limiting_limit": None,
}

EVERY_SETTING: dict[str, Any] = {
    **SDK_REQUIRED,
    "cache_ttl": 60,
    "cache_invalidate_on_update": True,
    "collect_logs": False,
    "rate_limiting_interval": 10,
    "rate_limiting_limit": 5,
    "rate_limiting_technique": "sliding",
    "retry_max_attempts": 3,
    "retry_delay": 500,
    "retry_backoff": "exponential",
    "log_management": 10_000,
    "log_management_strategy": "DELETE_OLDEST",
    "authentication": True,
    "zdr": True,
    "otel": [{"url": "https://otel.example/v1/traces", "headers": {}}],
    "guardrails": {"prompt": {"P1": "BLOCK"}, "response": {}},
    "dlp": {"enabled": False, "action": "FLAG", "profiles": []},
    "spend_limits": None,
    "workers_ai_billing_mode": "postpaid",
    "some_newer_setting": {"kept": True},
}


def refusal(body: Any, update_of: str | None = None) -> errors.WaiError:
    with pytest.raises(errors.WaiError) as caught:
        parse_create(body) if update_of is None else parse_update(body, update_of)
    return caught.value


def test_the_sdks_required_arguments_make_a_gateway_with_wais_defaults():
    gateway = parse_create(SDK_REQUIRED)
    assert gateway == Gateway("my-gateway", cache_ttl=None, collect_logs=True)
    assert parse_update({k: v for k, v in SDK_REQUIRED.items() if k != "id"}, "my-gateway") == gateway


def test_every_setting_is_read_and_the_ones_wai_does_not_act_on_are_kept_as_sent():
    gateway = parse_create(EVERY_SETTING)
    assert (gateway.cache_ttl, gateway.cache_invalidate_on_update, gateway.collect_logs) == (60, True, False)
    assert (gateway.rate_limiting_interval, gateway.rate_limiting_limit) == (10, 5)
    assert gateway.rate_limiting_technique == "sliding"
    assert (gateway.retry_max_attempts, gateway.retry_delay, gateway.retry_backoff) == (3, 500, "exponential")
    assert (gateway.log_management, gateway.log_management_strategy) == (10_000, "DELETE_OLDEST")
    assert gateway.authentication is True
    kept = {"zdr", "otel", "guardrails", "dlp", "spend_limits", "workers_ai_billing_mode", "some_newer_setting"}
    assert gateway.other == {name: EVERY_SETTING[name] for name in kept}
    rendered = render(gateway, "acct")
    assert {name: rendered[name] for name in EVERY_SETTING} == EVERY_SETTING


@pytest.mark.parametrize(
    "name",
    [
        "cache_ttl",
        "rate_limiting_interval",
        "rate_limiting_limit",
        "rate_limiting_technique",
        "retry_max_attempts",
        "retry_delay",
        "retry_backoff",
        "log_management",
        "log_management_strategy",
        "logpush_public_key",
        "otel",
        "guardrails",
        "spend_limits",
        "stripe",
        "store_id",
    ],
)
def test_null_is_accepted_for_every_nullable_setting(name):
    parse_create({**SDK_REQUIRED, name: None})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("id", "Upper"),
        ("id", ""),
        ("id", "a" * 65),
        ("id", "trailing-"),
        ("id", "two--dashes"),
        ("id", 7),
        ("cache_ttl", -1),
        ("cache_ttl", "60"),
        ("cache_ttl", 1.5),
        ("cache_ttl", True),
        ("rate_limiting_interval", -1),
        ("rate_limiting_limit", -1),
        ("rate_limiting_technique", "leaky"),
        ("retry_max_attempts", 0),
        ("retry_max_attempts", 6),
        ("retry_delay", -1),
        ("retry_delay", 5001),
        ("retry_backoff", "random"),
        ("log_management", 9_999),
        ("log_management", 10_000_001),
        ("log_management_strategy", "DROP"),
        ("collect_logs", None),
        ("collect_logs", "true"),
        ("cache_invalidate_on_update", None),
        ("cache_invalidate_on_update", 1),
        ("authentication", "yes"),
        ("authentication", None),
        ("logpush", 1),
        ("zdr", None),
        ("byok_only", "no"),
        ("log_classification", 0),
        ("logpush_public_key", "too-short"),
        ("workers_ai_billing_mode", "prepaid"),
        ("otel", [{}] * 6),
        ("otel", {"url": "x"}),
        ("dlp", None),
        ("guardrails", "BLOCK"),
        ("spend_limits", []),
        ("stripe", 5),
        ("store_id", 5),
    ],
)
def test_each_bad_setting_answers_7001_with_its_path(name, value):
    error = refusal({**SDK_REQUIRED, name: value})
    assert (error.status, error.code, error.message) == (400, 7001, "Input Validation Error")
    assert error.where == ("body", name)
    assert name in (error.openai_message or "")  # the sentence says which setting is wrong


@pytest.mark.parametrize("name", [*gateway_objects.REQUIRED, "id"])
def test_a_create_body_lacking_a_required_setting_names_it(name):
    body = {key: value for key, value in SDK_REQUIRED.items() if key != name}
    assert refusal(body).where == ("body", name)


@pytest.mark.parametrize("name", gateway_objects.REQUIRED)
def test_an_update_body_lacking_a_required_setting_names_it(name):
    body = {key: value for key, value in SDK_REQUIRED.items() if key not in (name, "id")}
    assert refusal(body, update_of="my-gateway").where == ("body", name)


@pytest.mark.parametrize("body", [[], "gateway", None, 5])
def test_a_body_that_is_not_an_object_is_refused(body):
    assert refusal(body).where == ("body",)


def test_an_update_takes_its_id_from_the_url_and_refuses_another_in_the_body():
    assert parse_update({**SDK_REQUIRED, "id": "my-gateway"}, "my-gateway").id == "my-gateway"
    assert refusal({**SDK_REQUIRED, "id": "other"}, update_of="my-gateway").where == ("body", "id")
    # The URL's id is the store's to look up (404 when unknown), not a validation error.
    assert parse_update({k: v for k, v in SDK_REQUIRED.items() if k != "id"}, "Not-Valid").id == "Not-Valid"


def test_an_object_read_back_and_sent_again_is_the_same_gateway():
    stored = Gateway("my-gateway", cache_ttl=30, internal_id="made-once", created_at=1.0, modified_at=2.0)
    again = parse_update(render(stored, "acct"), "my-gateway")
    assert again == Gateway("my-gateway", cache_ttl=30, other=again.other)
    assert "created_at" not in again.other and "internal_id" not in again.other
    assert again.other == {name: value for name, value in gateway_objects.KEPT_DEFAULTS.items()}


def test_a_gateway_is_rendered_as_cloudflares_object():
    gateway = Gateway("my-gateway", internal_id="4b0c7e1a-0000-4000-8000-000000000001", created_at=1_700_000_000.25)
    rendered = render(gateway, "0123abcd")
    assert rendered["id"] == "my-gateway"
    assert (rendered["account_id"], rendered["account_tag"]) == ("0123abcd", "0123abcd")
    assert rendered["internal_id"] == gateway.internal_id
    assert rendered["created_at"] == "2023-11-14T22:13:20.250Z"
    assert datetime.fromisoformat(rendered["modified_at"]).timestamp() == 0
    assert rendered["is_default"] is False
    required = ["cache_invalidate_on_update", "cache_ttl", "collect_logs", "rate_limiting_interval"]
    assert all(name in rendered for name in [*required, "rate_limiting_limit", "rate_limiting_technique"])
    assert render(Gateway("default"), "a")["is_default"] is True


def test_a_declared_gateways_internal_id_is_the_same_uuid_wherever_it_is_rendered():
    first, second = render(Gateway("team", declared=True), "a"), render(Gateway("team", declared=True), "b")
    assert first["internal_id"] == second["internal_id"] == str(uuid.UUID(first["internal_id"]))
    assert render(Gateway("other", declared=True), "a")["internal_id"] != first["internal_id"]


def test_a_validation_error_carries_its_path_in_the_envelope_and_its_sentence_in_messages():
    body = workers_ai.failure(refusal({**SDK_REQUIRED, "cache_ttl": -1}))
    assert body["errors"] == [{"code": 7001, "message": "Input Validation Error", "path": ["body", "cache_ttl"]}]
    assert body["messages"][0]["code"] == 7001
    assert body["messages"][0]["message"].startswith("cache_ttl:")
    # Every other error is as before: no path, no messages.
    assert workers_ai.failure(errors.gateway_not_found())["errors"] == [{"code": 7002, "message": "Not Found"}]
    assert workers_ai.failure(errors.gateway_not_found())["messages"] == []


def test_a_gateways_url_is_this_servers_in_cloudflares_layout():
    url = gateway_objects.gateway_url("http://127.0.0.1:8000/", "acct", "my-gateway", "workers-ai")
    assert url == "http://127.0.0.1:8000/v1/acct/my-gateway/workers-ai"
    assert gateway_objects.binding_url(url) == {"url": url}
