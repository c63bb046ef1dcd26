"""Gateways' rate limits counted in this process: fixed windows on the clock, sliding ones over the
last interval, and the Retry-After a refused request gets."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from server.serving.gateway_limits import LocalGatewayLimits, window_of
from server.serving.gateways import Gateway

START = 60 * 20_000.0  # on a minute of the clock
FIXED = Gateway("fixed-gw", rate_limiting_interval=60, rate_limiting_limit=3, rate_limiting_technique="fixed")
SLIDING = replace(FIXED, id="sliding-gw", rate_limiting_technique="sliding")


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def limits() -> tuple[LocalGatewayLimits, Clock]:
    clock = Clock()
    return LocalGatewayLimits(clock), clock


def takes(limits: LocalGatewayLimits, gateway: Gateway, count: int) -> list[int | None]:
    async def run() -> list[int | None]:
        return [await limits.take(gateway) for _ in range(count)]

    return asyncio.run(run())


def test_a_gateway_without_a_limit_lets_everything_through():
    counted, _ = limits()
    for gateway in (
        Gateway("open"),
        replace(FIXED, rate_limiting_limit=0),
        replace(FIXED, rate_limiting_interval=0),
        replace(FIXED, rate_limiting_limit=None),
    ):
        assert takes(counted, gateway, 10) == [None] * 10
    assert not counted.counts


def test_fixed_windows_start_afresh_on_the_clock():
    counted, clock = limits()
    clock.now = START + 10
    assert takes(counted, FIXED, 4) == [None, None, None, 50]  # the window ends on the next minute
    clock.now = START + 59.5
    assert takes(counted, FIXED, 1) == [1]  # half a second: at least one
    clock.now = START + 60  # a new window: a whole limit again, right after the last
    assert takes(counted, FIXED, 4) == [None, None, None, 60]


def test_a_burst_at_a_fixed_windows_end_and_another_at_the_next_ones_start_both_pass():
    counted, clock = limits()
    clock.now = START + 59.9
    assert takes(counted, FIXED, 3) == [None] * 3
    clock.now = START + 60.1
    assert takes(counted, FIXED, 3) == [None] * 3


def test_a_sliding_window_still_counts_the_last_intervals_requests_past_a_minute_edge():
    counted, clock = limits()
    clock.now = START + 59.9
    assert takes(counted, SLIDING, 3) == [None] * 3
    clock.now = START + 60.1
    assert takes(counted, SLIDING, 1) == [60]  # the three leave at 120 (their slice, 59-60, plus 60 s)
    clock.now = START + 119.5
    assert takes(counted, SLIDING, 1) == [1]
    clock.now = START + 120
    assert takes(counted, SLIDING, 4) == [None, None, None, 61]  # their slice is 120-121


def test_sliding_lets_one_through_as_each_earlier_request_leaves():
    counted, clock = limits()
    for second in (0, 20, 40):
        clock.now = START + second
        assert takes(counted, SLIDING, 1) == [None]
    clock.now = START + 50
    assert takes(counted, SLIDING, 1) == [11]  # the first leaves at 61: its slice (0-1) plus 60 s
    clock.now = START + 61
    assert takes(counted, SLIDING, 2) == [None, 20]  # the second leaves at 81
    clock.now = START + 81
    assert takes(counted, SLIDING, 2) == [None, 20]


def test_a_request_counts_for_its_interval_and_at_most_one_slice_more():
    counted, clock = limits()
    gateway = replace(SLIDING, rate_limiting_limit=1, rate_limiting_interval=600)  # slices of 10 s
    clock.now = START + 3
    assert takes(counted, gateway, 1) == [None]
    clock.now = START + 600
    assert takes(counted, gateway, 1) == [10]  # counted until 610: its slice's end plus the interval
    clock.now = START + 610
    assert takes(counted, gateway, 1) == [None]


def test_the_wait_covers_as_many_requests_as_must_leave():
    # A limit lowered from 3 to 2: two of the three counted must leave before one more fits.
    counted, clock = limits()
    for second in (0, 20, 40):
        clock.now = START + second
        takes(counted, SLIDING, 1)
    clock.now = START + 45
    assert takes(counted, replace(SLIDING, rate_limiting_limit=2), 1) == [36]  # the second leaves at 81


def test_refused_requests_are_not_counted():
    counted, clock = limits()
    clock.now = START
    assert takes(counted, FIXED, 10) == [None, None, None] + [60] * 7
    assert sum(counted.counts[window_of(FIXED).name].values()) == 3


def test_gateways_count_apart_and_a_new_interval_or_technique_counts_afresh():
    counted, _ = limits()
    assert takes(counted, FIXED, 4)[-1] == 60
    assert takes(counted, replace(FIXED, id="other-gw"), 3) == [None] * 3
    assert takes(counted, replace(FIXED, rate_limiting_interval=120), 3) == [None] * 3
    assert takes(counted, replace(FIXED, rate_limiting_technique="sliding"), 3) == [None] * 3


def test_a_gateway_without_a_technique_counts_in_fixed_windows():
    assert window_of(replace(FIXED, rate_limiting_technique=None)).slice_s == 60
    assert window_of(SLIDING).slice_s == 1 and window_of(SLIDING).after_s == 60
