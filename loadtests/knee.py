"""Where a saturation sweep's throughput stops growing: the knee, from the levels measured so far.

A sweep doubles the streams in flight (1, 2, 4, ...). While the server has room, each doubling
nearly doubles the output tokens per second; past its capacity the extra streams only queue, so
throughput stays flat while time to first token or inter-token latency climbs. The knee is the last
level before that plateau: the fewest streams that reach (nearly) the server's whole throughput.

A step "grew" when throughput rose by at least `min_gain` per doubling of the streams (10 %: noise
on a busy machine stays below it, a server with room doubles). The plateau is measured against the
knee, not the step before it, so a noisy plateau (up 8 %, down 5 %, up 9 %) cannot creep past the
bar one small step at a time, while a real second climb (a level well above the knee) clears it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MIN_GAIN = 0.10  # throughput rise per doubling of the streams that still counts as growing
MIN_LATENCY_RISE = 0.10  # a latency p50 this much above the level before has climbed
PAST_KNEE = 2  # levels measured past the knee before the sweep stops


@dataclass(frozen=True)
class LevelPoint:
    """What the knee is judged on, for one target at one level."""

    concurrency: float
    output_throughput: float  # output tokens per second
    ttft_p50_ms: float | None
    itl_p50_ms: float | None
    failed: int = 0  # requests that failed (cancelled ones are not failures)


@dataclass(frozen=True)
class Knee:
    index: int | None  # the knee's level among the points; None when none was found
    saturated: bool  # the sweep can stop: measured far enough past the knee, or over-saturated
    reason: str


def sweep_levels(max_concurrency: int) -> list[int]:
    """1, 2, 4, ... up to the cap, and the cap itself when it is not a power of two."""
    if max_concurrency < 1:
        raise ValueError("the sweep's highest concurrency must be at least 1")
    levels = [2**i for i in range(max_concurrency.bit_length()) if 2**i <= max_concurrency]
    return levels if levels[-1] == max_concurrency else [*levels, max_concurrency]


def grew(before: LevelPoint, after: LevelPoint, min_gain: float = MIN_GAIN) -> bool:
    """Throughput rose by at least `min_gain` per doubling of the streams from `before` to `after`."""
    if before.output_throughput <= 0:
        return after.output_throughput > 0
    doublings = math.log2(after.concurrency / before.concurrency)
    return after.output_throughput >= before.output_throughput * (1 + min_gain * doublings)


def latency_climbed(before: LevelPoint, after: LevelPoint, rise: float = MIN_LATENCY_RISE) -> bool:
    """Time to first token or inter-token latency (p50) rose by more than `rise`."""
    pairs = ((before.ttft_p50_ms, after.ttft_p50_ms), (before.itl_p50_ms, after.itl_p50_ms))
    return any(a is not None and b is not None and b > a * (1 + rise) for a, b in pairs)


def find_knee(points: Sequence[LevelPoint], min_gain: float = MIN_GAIN, past_knee: int = PAST_KNEE) -> Knee:
    """The knee among levels of rising concurrency, and whether the sweep should stop there.

    Stops at the first of: a level with failed requests (429s, timeouts: over-saturated; the knee is
    the one found, else the level before), throughput falling more than `min_gain` below the best
    level so far (the knee is the one found, else the best level), or `past_knee` levels measured
    past a knee. Without any of these the sweep goes on; `index` is then the knee found so far, if any.
    """
    knee: int | None = None
    for i, point in enumerate(points):
        at = f"concurrency {point.concurrency:g}"
        if point.failed:
            found = knee if knee is not None else (i - 1 if i else None)
            return Knee(found, True, f"over-saturated: {point.failed} requests failed at {at}")
        if i == 0:
            continue
        best = max(range(i), key=lambda j: points[j].output_throughput)
        if point.output_throughput < points[best].output_throughput * (1 - min_gain):
            found = knee if knee is not None else best
            return Knee(found, True, f"over-saturated: throughput fell at {at}")
        if knee is not None and grew(points[knee], point, min_gain):
            knee = None  # well above the plateau: it was noise, the server still had room
        if knee is None and not grew(points[i - 1], point, min_gain) and latency_climbed(points[i - 1], point):
            knee = i - 1
        if knee is not None and i - knee >= past_knee:
            flat = f"concurrency {points[knee].concurrency:g}"
            return Knee(knee, True, f"throughput flat past {flat} while latency climbed ({i - knee} levels past)")
    if knee is not None:
        return Knee(knee, False, f"throughput flat past concurrency {points[knee].concurrency:g}")
    return Knee(None, False, "throughput still growing")
