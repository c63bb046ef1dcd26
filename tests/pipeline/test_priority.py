"""`X-Priority: low` reaches the engine as a lower priority (a higher number) than interactive requests."""

from __future__ import annotations

import pytest

from tests.pipeline.requests import TEXT_PROTOCOLS, ask, error_message


@pytest.mark.parametrize("protocol", TEXT_PROTOCOLS)
def test_low_priority_requests_reach_the_engine_behind_interactive_ones(client, engine, protocol):
    ask(client, protocol)
    ask(client, protocol, headers={"X-Priority": "low"})
    ask(client, protocol, headers={"X-Priority": "normal"})
    assert engine.priorities == [0, 1, 0]


def test_an_unknown_priority_is_400(client, engine):
    response = ask(client, "run", headers={"X-Priority": "urgent"})
    assert "x-priority header must be low or normal" in error_message(response, "run", 400, 5006)
    assert engine.requests == []
