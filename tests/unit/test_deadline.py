"""A request's deadline around its engine deltas: one timer per request, not one per delta."""

from __future__ import annotations

import asyncio
import math

import pytest

from server import errors
from server.lifecycle import Deadline


class Items:
    """Deltas that come `every_s` apart; remembers whether it was closed."""

    def __init__(self, every_s: float, count: int = 1000):
        self.every_s, self.count, self.closed, self.given = every_s, count, False, 0

    async def __call__(self):
        try:
            for n in range(self.count):
                await asyncio.sleep(self.every_s)
                self.given += 1
                yield n
        finally:
            self.closed = True


def run(coroutine):
    return asyncio.run(coroutine)


def test_items_in_time_pass_whole():
    async def main():
        deadline = Deadline(asyncio.get_running_loop().time() + 5)
        return [item async for item in deadline.within(Items(0.001, 5)())]

    assert run(main()) == [0, 1, 2, 3, 4]


def test_waiting_past_the_deadline_is_a_timeout_and_closes_the_items():
    async def main():
        items = Items(10)
        deadline = Deadline(asyncio.get_running_loop().time() + 0.05)
        with pytest.raises(errors.WaiError) as raised:
            async for _ in deadline.within(items()):
                pass
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0  # the timer's cancellation was taken back
        await asyncio.sleep(0.01)  # and the task goes on as usual
        return raised.value, items.closed

    error, closed = run(main())
    assert error.code == errors.request_timeout().code and closed


def test_a_deadline_that_passes_between_items_ends_the_stream_before_the_next_wait():
    async def main():
        items = Items(0)
        deadline = Deadline(asyncio.get_running_loop().time() + 0.05)
        got = []
        with pytest.raises(errors.WaiError):
            async for item in deadline.within(items()):
                got.append(item)
                await asyncio.sleep(0.1)  # the consumer is busy (writing to its client) when it passes
        return got, items.closed

    got, closed = run(main())
    assert got == [0] and closed


def test_a_cut_ends_the_wait_at_once_with_the_cut_error():
    async def main():
        loop = asyncio.get_running_loop()
        deadline = Deadline(loop.time() + 60)
        loop.call_later(0.05, deadline.cut, errors.service_unavailable())
        started = loop.time()
        with pytest.raises(errors.WaiError) as raised:
            async for _ in deadline.within(Items(10)()):
                pass
        return raised.value, loop.time() - started

    error, waited = run(main())
    assert error.code == errors.service_unavailable().code and waited < 5


def test_a_shorter_client_timeout_moves_the_timer():
    async def main():
        deadline = Deadline(asyncio.get_running_loop().time() + 60)
        items = deadline.within(Items(10)())
        waiting = asyncio.ensure_future(anext(items))
        await asyncio.sleep(0.01)
        deadline.shorten(0.05)
        with pytest.raises(errors.WaiError):
            await asyncio.wait_for(waiting, 5)

    run(main())


def test_somebody_elses_cancellation_stays_a_cancellation():
    async def main():
        deadline = Deadline(asyncio.get_running_loop().time() + 60)

        async def consume():
            async for _ in deadline.within(Items(10)()):
                pass

        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())


def test_no_deadline_means_no_timer():
    async def main():
        deadline = Deadline(math.inf)
        items = deadline.within(Items(0, 3)())
        first = await anext(items)
        armed = deadline._timer
        rest = [item async for item in items]
        return [first, *rest], armed

    got, armed = run(main())
    assert got == [0, 1, 2] and armed is None
