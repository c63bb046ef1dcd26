"""The gateways service (server/serving/gateways.py) on its SQLite store: declared gateways first and
read-only, `default` made on its first use, `for_request`'s short-lived copies, paging and search, and
503 / 3048 when the shared database cannot be reached."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from server import errors
from server.serving.gateways import DEFAULT_GATEWAY, Gateway, Gateways, PostgresGatewayStore, SqliteGatewayStore
from server.stores.postgres import Database


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def service(tmp_path, declared: list[Gateway] | None = None, clock: Clock | None = None) -> Gateways:
    clock = clock or Clock()
    return Gateways(declared or [], SqliteGatewayStore(tmp_path / "batch.sqlite3"), clock=clock, wall_clock=clock)


def run(awaitable: Any) -> Any:
    return asyncio.run(awaitable)


def refused(awaitable: Any) -> errors.WaiError:
    with pytest.raises(errors.WaiError) as caught:
        run(awaitable)
    return caught.value


def test_default_is_made_on_its_first_use_with_caching_off_and_logs_on(tmp_path):
    gateways = service(tmp_path)
    assert refused(gateways.get(DEFAULT_GATEWAY)).code == 7002
    made = run(gateways.for_request(DEFAULT_GATEWAY))
    assert (made.cache_ttl, made.collect_logs, made.declared) == (0, True, False)
    assert made.internal_id
    assert run(gateways.get(DEFAULT_GATEWAY)) == made
    # Another process on the same file finds the same one rather than making a second.
    assert run(service(tmp_path).for_request(DEFAULT_GATEWAY)) == made


def test_any_other_unknown_gateway_is_404_7002(tmp_path):
    error = refused(service(tmp_path).for_request("nobody"))
    assert (error.status, error.code, error.message) == (404, 7002, "Not Found")


def test_for_request_keeps_its_copy_a_second_and_sees_its_own_changes_at_once(tmp_path):
    clock = Clock()
    here, elsewhere = service(tmp_path, clock=clock), service(tmp_path, clock=clock)
    run(here.create(Gateway("shared", cache_ttl=10)))
    assert run(here.for_request("shared")).cache_ttl == 10
    run(elsewhere.update("shared", Gateway("shared", cache_ttl=20)))
    assert run(here.for_request("shared")).cache_ttl == 10  # its copy, read under a second ago
    clock.now += 1.0
    assert run(here.for_request("shared")).cache_ttl == 20
    run(here.update("shared", Gateway("shared", cache_ttl=30)))
    assert run(here.for_request("shared")).cache_ttl == 30  # its own change: at once
    run(elsewhere.delete("shared"))
    clock.now += 1.0
    assert refused(here.for_request("shared")).code == 7002


def test_an_update_keeps_the_creation_time_and_internal_id(tmp_path):
    clock = Clock()
    gateways = service(tmp_path, clock=clock)
    made = run(gateways.create(Gateway("g", cache_ttl=1)))
    clock.now += 5
    updated = run(gateways.update("g", Gateway("g", cache_ttl=2, other={"zdr": True})))
    assert (updated.created_at, updated.modified_at, updated.internal_id) == (1000.0, 1005.0, made.internal_id)
    assert (updated.cache_ttl, updated.other) == (2, {"zdr": True})
    assert refused(gateways.update("missing", Gateway("missing"))).code == 7002
    assert refused(gateways.delete("missing")).code == 7002


def test_declared_gateways_come_first_and_cannot_be_changed(tmp_path):
    declared = [Gateway("team-b", declared=True), Gateway("team-a", declared=True)]
    clock = Clock()
    gateways = service(tmp_path, declared, clock)
    for name in ("team-c", "other", "team-d"):
        clock.now += 1
        run(gateways.create(Gateway(name)))
    assert [g.id for g in run(gateways.list(1, 20))[0]] == ["team-b", "team-a", "team-c", "other", "team-d"]
    pages = [run(gateways.list(page, 2, "TEAM")) for page in (1, 2, 3)]
    assert [[g.id for g in shown] for shown, _ in pages] == [["team-b", "team-a"], ["team-c", "team-d"], []]
    assert {total for _, total in pages} == {4}
    assert [g.id for g in run(gateways.list(2, 3))[0]] == ["other", "team-d"]
    assert run(gateways.list(10**18, 100)) == ([], 5)
    assert refused(gateways.create(Gateway("team-a"))).status == 409
    assert refused(gateways.update("team-a", Gateway("team-a"))).code == 7001
    assert refused(gateways.delete("team-a")).code == 7001
    assert run(gateways.for_request("team-a")).declared


def test_a_search_for_an_underscore_matches_it_literally(tmp_path):
    gateways = service(tmp_path)
    for name in ("a_b", "axb"):
        run(gateways.create(Gateway(name)))
    assert [g.id for g in run(gateways.list(1, 20, "_"))[0]] == ["a_b"]


def test_a_second_create_of_an_id_is_409_and_not_retried(tmp_path):
    gateways = service(tmp_path)
    run(gateways.create(Gateway("once")))
    error = refused(gateways.create(Gateway("once")))
    assert (error.status, error.code, error.headers) == (409, 7003, {"x-should-retry": "false"})


def test_the_shared_database_unreachable_is_503_3048_for_gateways():
    database = Database("postgresql://127.0.0.1:1/none", timeout_s=0.2)  # never opened: not migrated
    gateways = Gateways([], PostgresGatewayStore(database))
    error = refused(gateways.for_request("any"))
    assert (error.status, error.code) == (503, 3048)
    assert error.message == "The gateways store is unavailable, please try again."
