"""The knee of a saturation sweep, judged on synthetic levels: pure logic, no server."""

import pytest

from loadtests.engine_metrics import KV_CACHE, PREEMPTIONS, RUNNING, WAITING, engine_values
from loadtests.knee import LevelPoint, find_knee, grew, sweep_levels


def levels(*figures, failed_at: float | None = None) -> list[LevelPoint]:
    """(concurrency, output tokens/s, TTFT p50 ms) per level; ITL stays at 20 ms."""
    return [LevelPoint(c, tps, ttft, 20.0, failed=3 if c == failed_at else 0) for c, tps, ttft in figures]


def test_a_clear_knee_is_the_last_level_before_the_plateau_and_the_sweep_stops_two_levels_past_it():
    points = levels((1, 100, 50), (2, 198, 52), (4, 390, 55), (8, 410, 140), (16, 415, 420), (32, 416, 900))
    knee = find_knee(points[:4])
    assert (knee.index, knee.saturated) == (2, False)  # flat at 8 while TTFT climbed: a knee, not yet confirmed
    knee = find_knee(points[:5])
    assert (knee.index, knee.saturated) == (2, True) and "flat past concurrency 4" in knee.reason
    assert find_knee(points) == knee  # the levels after the stop do not change it
    assert find_knee(points[:4], past_knee=1).saturated  # one level past is enough when asked


def test_no_knee_within_the_cap_while_throughput_keeps_growing():
    points = levels((1, 100, 50), (2, 190, 51), (4, 350, 53), (8, 600, 60), (16, 900, 80))
    knee = find_knee(points)
    assert (knee.index, knee.saturated, knee.reason) == (None, False, "throughput still growing")


def test_a_noisy_plateau_is_measured_against_the_knee_not_crept_past_step_by_step():
    # Past 4 streams: +9 %, -6 %, then +10 % over the step before, yet 32 streams give only 13 % more
    # than 4: still one plateau at 4, which a step-by-step comparison would have left at 16.
    points = levels((1, 100, 50), (2, 200, 50), (4, 400, 52), (8, 436, 120), (16, 410, 300), (32, 452, 700))
    assert grew(points[4], points[5])
    knee = find_knee(points, past_knee=3)
    assert (knee.index, knee.saturated) == (2, True)


def test_a_flat_step_that_was_noise_is_forgotten_when_throughput_climbs_again():
    # 2 streams looked flat (and TTFT rose), but 4 streams nearly doubled the throughput again.
    points = levels((1, 100, 50), (2, 104, 60), (4, 210, 62), (8, 400, 65))
    knee = find_knee(points)
    assert (knee.index, knee.saturated) == (None, False)
    # Flat throughput with flat latency is no knee either (nothing queues: the client may be the limit).
    assert find_knee(levels((1, 100, 50), (2, 104, 51), (4, 106, 52))).index is None


def test_falling_throughput_stops_the_sweep_at_the_best_level():
    points = levels((1, 100, 50), (2, 200, 50), (4, 380, 55), (8, 300, 400))
    knee = find_knee(points)
    assert (knee.index, knee.saturated) == (2, True) and "throughput fell at concurrency 8" in knee.reason
    # Already past a knee: that knee stays.
    points = levels((1, 100, 50), (2, 200, 50), (4, 400, 55), (8, 410, 200), (16, 300, 900))
    assert find_knee(points, past_knee=3).index == 2


def test_failed_requests_stop_the_sweep_with_the_knee_found_or_the_last_clean_level():
    points = levels((1, 100, 50), (2, 200, 50), (4, 390, 55), (8, 760, 60), failed_at=8)
    knee = find_knee(points)
    assert (knee.index, knee.saturated) == (2, True) and "3 requests failed at concurrency 8" in knee.reason
    points = levels((1, 100, 50), (2, 200, 50), (4, 210, 150), (8, 220, 300), failed_at=8)
    assert find_knee(points, past_knee=3).index == 1  # the knee already found
    knee = find_knee(levels((1, 0, 50), failed_at=1))
    assert (knee.index, knee.saturated) == (None, True)  # failing from the first stream: no knee at all


def test_the_growth_bar_scales_with_the_step_and_the_levels_double_up_to_the_cap():
    assert grew(LevelPoint(8, 400, None, None), LevelPoint(12, 424, None, None))  # 1.5x streams: 5.8 % is enough
    assert not grew(LevelPoint(8, 400, None, None), LevelPoint(16, 424, None, None))
    assert sweep_levels(1) == [1] and sweep_levels(16) == [1, 2, 4, 8, 16]
    assert sweep_levels(12) == [1, 2, 4, 8, 12]
    with pytest.raises(ValueError):
        sweep_levels(0)


def test_engine_series_are_read_with_the_prometheus_parser_and_summed_over_labels():
    text = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="a"} 3.0
vllm:num_requests_running{engine="1",model_name="a"} 2.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="a"} 0.25
# TYPE vllm:num_preemptions counter
vllm:num_preemptions_total{engine="0",model_name="a"} 7.0
vllm:num_preemptions_created{engine="0",model_name="a"} 1.7e9
"""
    values = engine_values(text)
    assert values == {RUNNING: 5.0, WAITING: None, KV_CACHE: 0.25, PREEMPTIONS: 7.0}
    with pytest.raises(ValueError):
        engine_values("vllm:num_requests_running{engine= oops\n")
