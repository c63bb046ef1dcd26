"""The gateway logs API's queries and PATCH bodies as read off the wire (protocol/gateway_logs.py): the
cloudflare SDK's repeated `filters.key/operator/value` and a `filters=<JSON>` array give the same
query; the deprecated flat parameters become filters; a value that does not read is 400 / 7001 with
the parameter's path. Also log ids and the heads' credentials."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from cloudflare import Cloudflare

from server import errors
from server.protocol import gateway_logs
from server.serving.gateway_logs import UNCHANGED, LogFilter, LogQuery, new_log_id

SEEN_2024 = 1704067200.0  # 2024-01-01T00:00:00Z


def sdk_query(**params: Any) -> list[tuple[str, str]]:
    """The query string the cloudflare SDK sends for `logs.list(**params)`, as pairs."""
    sent: list[httpx.URL] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request.url)
        return httpx.Response(200, json={"success": True, "result": [], "result_info": {"page": 1}})

    transport = httpx.Client(transport=httpx.MockTransport(answer))
    client = Cloudflare(api_token="t", base_url="http://wai/client/v4", http_client=transport, max_retries=0)
    client.ai_gateway.logs.list(gateway_id="g", account_id="a", **params)
    return parse_qsl(urlsplit(str(sent[0])).query, keep_blank_values=True)


def json_query(filters: list[dict[str, Any]], **params: str) -> list[tuple[str, str]]:
    return [("filters", json.dumps(filters)), *params.items()]


def refusal(read: Any, *args: Any) -> tuple[str | int, ...]:
    """The path of the 400 / 7001 that reading refuses with."""
    with pytest.raises(errors.WaiError) as refused:
        read(*args)
    assert (refused.value.status, refused.value.code) == (400, 7001)
    assert refused.value.where is not None
    return refused.value.where


def test_one_filter_with_several_values_reads_the_same_from_the_sdk_and_from_json():
    wanted = LogQuery(filters=(LogFilter("model", "eq", ("m1", "m2")),), per_page=5, order_by="model")
    from_sdk = sdk_query(
        filters=[{"key": "model", "operator": "eq", "value": ["m1", "m2"]}], per_page=5, order_by="model"
    )
    assert gateway_logs.list_query(from_sdk) == wanted
    from_json = json_query([{"key": "model", "operator": "eq", "value": ["m1", "m2"]}], per_page="5", order_by="model")
    assert gateway_logs.list_query(from_json) == wanted


def test_several_filters_of_every_kind_read_the_same_from_the_sdk_and_from_json():
    given = [
        {"key": "success", "operator": "eq", "value": [True]},
        {"key": "cached", "operator": "neq", "value": [False]},
        {"key": "tokens_in", "operator": "gt", "value": [10]},
        {"key": "cost", "operator": "lt", "value": [0.5]},
        {"key": "created_at", "operator": "gt", "value": ["2024-01-01T00:00:00Z"]},
        {"key": "metadata.key", "operator": "eq", "value": ["user"]},
        {"key": "metadata.value", "operator": "contains", "value": ["ali"]},
    ]
    wanted = (
        LogFilter("success", "eq", (True,)),
        LogFilter("cached", "neq", (False,)),
        LogFilter("tokens_in", "gt", (10.0,)),
        LogFilter("cost", "lt", (0.5,)),
        LogFilter("created_at", "gt", (SEEN_2024,)),
        LogFilter("metadata.key", "eq", ("user",)),
        LogFilter("metadata.value", "contains", ("ali",)),
    )
    assert gateway_logs.list_query(sdk_query(filters=given)).filters == wanted
    assert gateway_logs.list_query(json_query(given)).filters == wanted
    # A hand-written caller's scalar `value` is one value.
    scalars = [{**each, "value": each["value"][0]} for each in given]
    assert gateway_logs.list_query(json_query(scalars)).filters == wanted


def test_the_deprecated_flat_parameters_are_filters():
    query = gateway_logs.list_query(
        sdk_query(
            start_date="2024-01-01T00:00:00Z",
            min_cost=1,
            max_total_tokens=100,
            success=False,
            model="m",
            feedback=1,
            direction="asc",
            meta_info=True,
            search="paris",
        )
    )
    assert set(query.filters) == {
        LogFilter("created_at", "gte", (SEEN_2024,)),
        LogFilter("cost", "gte", (1.0,)),
        LogFilter("tokens", "lte", (100.0,)),
        LogFilter("success", "eq", (False,)),
        LogFilter("model", "eq", ("m",)),
        LogFilter("feedback", "eq", (1.0,)),
    }
    assert (query.direction, query.meta_info, query.search) == ("asc", True, "paris")


def test_defaults_list_newest_first_and_delete_oldest_first():
    assert gateway_logs.list_query([]) == LogQuery(order_by="created_at", direction="desc", page=1, per_page=20)
    query, limit = gateway_logs.delete_query([("order_by", "cost")])
    assert (query.order_by, query.direction, limit) == ("cost", "asc", 10_000)


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ([("per_page", "51")], ("query", "per_page")),
        ([("per_page", "0")], ("query", "per_page")),
        ([("page", "0")], ("query", "page")),
        ([("page", "two")], ("query", "page")),
        ([("order_by", "path")], ("query", "order_by")),
        ([("order_by_direction", "up")], ("query", "order_by_direction")),
        ([("meta_info", "yes")], ("query", "meta_info")),
        ([("min_cost", "cheap")], ("query", "min_cost")),
        ([("start_date", "yesterday")], ("query", "start_date")),
        ([("search", "a\x00b")], ("query", "search")),
        ([("filters", "[{")], ("query", "filters")),
        ([("filters", '[{"key": "cost", "operator": "gt", "value": 1e999}]')], ("query", "filters", 0, "value")),
        ([("filters", '[{"key": "model", "operator": "eq", "value": "a\\u0000"}]')], ("query", "filters", 0, "value")),
        ([("filters", '[{"key": "model"}]')], ("query", "filters", 0)),
        ([("filters", '[{"key": "user_agent", "operator": "eq", "value": "x"}]')], ("query", "filters", 0, "key")),
        ([("filters", '[{"key": "success", "operator": "gt", "value": true}]')], ("query", "filters", 0, "operator")),
        ([("filters", '[{"key": "model", "operator": "like", "value": "x"}]')], ("query", "filters", 0, "operator")),
        ([("filters", '[{"key": "cost", "operator": "gt", "value": ["a"]}]')], ("query", "filters", 0, "value")),
        ([("filters", '[{"key": "cost", "operator": "gt", "value": []}]')], ("query", "filters", 0, "value")),
        ([("filters", '[{"key": "cost", "operator": "gt", "value": null}]')], ("query", "filters", 0, "value")),
        (
            [("filters.key", "success"), ("filters.operator", "eq"), ("filters.value", "maybe")],
            ("query", "filters", 0, "value"),
        ),
        ([("filters.key", "model"), ("filters.value", "x")], ("query", "filters")),
        # Two filters, three values: the SDK's flattened values cannot be paired.
        (
            [
                ("filters.key", "model"),
                ("filters.key", "provider"),
                ("filters.operator", "eq"),
                ("filters.operator", "eq"),
            ]
            + [("filters.value", "a"), ("filters.value", "b"), ("filters.value", "c")],
            ("query", "filters"),
        ),
    ],
)
def test_a_query_that_does_not_read_is_7001_with_its_path(params, path):
    assert refusal(gateway_logs.list_query, params) == path


def test_a_bulk_delete_takes_at_most_10000():
    assert refusal(gateway_logs.delete_query, [("limit", "10001")]) == ("query", "limit")
    assert refusal(gateway_logs.delete_query, [("limit", "0")]) == ("query", "limit")
    assert gateway_logs.delete_query([("limit", "3")])[1] == 3


def test_patch_bodies():
    patch = gateway_logs.log_patch({"feedback": 1})
    assert (patch.feedback, patch.score, patch.metadata) == (1.0, UNCHANGED, UNCHANGED)
    patch = gateway_logs.log_patch({"feedback": "-1", "score": None, "metadata": {"a": 1, "b": None, "c": True}})
    assert (patch.feedback, patch.score, patch.metadata) == (-1.0, None, {"a": 1, "c": True})
    assert gateway_logs.log_patch({"metadata": None}).metadata is None
    assert refusal(gateway_logs.log_patch, {"feedback": 2}) == ("body", "feedback")
    assert refusal(gateway_logs.log_patch, {"feedback": True}) == ("body", "feedback")
    assert refusal(gateway_logs.log_patch, {"score": 100.5}) == ("body", "score")
    assert refusal(gateway_logs.log_patch, {"metadata": {"a": {"b": 1}}}) == ("body", "metadata", "a")
    assert refusal(gateway_logs.log_patch, {"metadata": [1]}) == ("body", "metadata")
    assert refusal(gateway_logs.log_patch, {"feedback": 10**400}) == ("body", "feedback")
    assert refusal(gateway_logs.log_patch, {"metadata": {"a": "\x00"}}) == ("body", "metadata", "a")
    assert refusal(gateway_logs.log_patch, [1]) == ("body",)


def test_no_credential_header_is_rendered_whatever_the_stored_heads_shape():
    secret = "sk-wai-secret"
    as_object = json.dumps({"Authorization": f"Bearer {secret}", "cf-aig-authorization": secret, "accept": "x"})
    as_pairs = json.dumps([["x-api-key", secret], ["Cookie", secret], ["accept", "x"]])
    as_lines = f"authorization: Bearer {secret}\naccept: x"
    for head in (as_object, as_pairs, as_lines):
        shown = gateway_logs.without_credentials(head)
        assert secret not in shown and "accept" in shown


def test_log_ids_are_ulids_that_sort_by_time():
    ids = [new_log_id(SEEN_2024 + i / 1000) for i in (0, 0, 0, 1, 5000)]
    assert all(re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", i) for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert ids[0][:10] == "01HK153X00"  # 2024-01-01's milliseconds, as every ULID library writes them
