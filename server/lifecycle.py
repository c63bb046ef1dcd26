"""The server's life around its requests: deadlines, draining on shutdown, stopping when an engine dies.

Every request in flight has a `Deadline`: its time limit, which a drain or a dead engine can cut
short. A text request waits for each engine delta under its deadline (api/pipeline.py), so a
request past it ends with 408 / 3007 (a stream with an error event and `[DONE]`), and a cut one
with 503 / 3040; either way its engine request is aborted.

On the first SIGTERM or SIGINT the server drains: `/readyz` answers 503, new API requests get 503 /
3040, requests in flight have `drain_timeout_s` to finish, then the rest are cut and the process
exits 0. When an engine dies the same happens at once, and the process exits 1, so that its
supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from typing import TypeVar

from server import errors

log = logging.getLogger("wai.lifecycle")

T = TypeVar("T")
CUT_GRACE_S = 5.0  # after a cut, how long requests get to write their last event before the exit


class Deadline:
    """When one request must be done (a loop time), and the error it ends with if cut short.

    One timer per request, armed while its deltas are read and moved only when the deadline moves:
    a timeout around each delta cost a timer per streamed token.
    """

    def __init__(self, at: float):
        self.at = at
        self.error: errors.WaiError | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._waiting: asyncio.Task | None = None  # the task awaiting the next item, while it does
        self._expired = False  # the timer cancelled that task

    def shorten(self, timeout_s: float) -> None:
        """The client asked for less time: `timeout_s` from now, if that is sooner."""
        self.at = min(self.at, asyncio.get_running_loop().time() + timeout_s)
        self._rearm()

    def cut(self, error: errors.WaiError) -> None:
        self.error, self.at = error, asyncio.get_running_loop().time()
        self._rearm()

    async def within(self, items: AsyncGenerator[T, None]) -> AsyncIterator[T]:
        """`items`, each awaited under the deadline; past it, `items` is closed and the error raised."""
        loop = asyncio.get_running_loop()
        self._arm(loop)
        try:
            async with aclosing(items):
                while True:
                    if loop.time() >= self.at:
                        raise self._passed()
                    task = self._waiting = asyncio.current_task()
                    try:
                        item = await anext(items)
                    except StopAsyncIteration:
                        return
                    except asyncio.CancelledError:
                        if not self._expired or task is None or task.uncancel() > 0:
                            raise  # somebody else's cancellation
                        raise self._passed() from None
                    finally:
                        self._waiting = None
                    yield item
        finally:
            self._disarm()

    def _passed(self) -> errors.WaiError:
        return self.error or errors.request_timeout()

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        self._disarm()
        if self.at != math.inf:
            self._timer = loop.call_at(self.at, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _rearm(self) -> None:
        if self._timer is not None:
            self._arm(asyncio.get_running_loop())

    def _expire(self) -> None:
        """The deadline passed: stop the wait for the next item; between items, `within` sees it itself."""
        self._timer = None
        if self._waiting is not None and not self._expired:
            self._expired = True
            self._waiting.cancel()


class Lifecycle:
    def __init__(self, drain_timeout_s: float):
        self.drain_timeout_s = drain_timeout_s
        self.draining = False
        self.exit_code = 0
        self.deadlines: set[Deadline] = set()  # one per API request in flight (api/middleware.py)
        # Set by whatever runs the app (server/cli.py): makes it stop serving and exit.
        self.request_exit: Callable[[], None] = lambda: None

    @property
    def in_flight(self) -> int:
        return len(self.deadlines)

    def open(self, timeout_s: float) -> Deadline:
        """A request arrived: its deadline, `timeout_s` from now, followed until `close`."""
        deadline = Deadline(asyncio.get_running_loop().time() + timeout_s)
        self.deadlines.add(deadline)
        return deadline

    def close(self, deadline: Deadline) -> None:
        self.deadlines.discard(deadline)

    async def drain(self) -> None:
        """Refuse new requests, give those in flight `drain_timeout_s`, cut the rest, then exit."""
        self.draining = True
        log.warning("draining: %d requests in flight, %.0f s to finish", self.in_flight, self.drain_timeout_s)
        await self._quiet(self.drain_timeout_s)
        await self._cut_and_exit()

    async def engine_died(self, model: str) -> None:
        """Refuse new requests, end those in flight with 503, and exit 1."""
        log.error("the engine of %s died: ending the requests in flight and exiting", model)
        self.draining, self.exit_code = True, 1
        await self._cut_and_exit()

    async def _cut_and_exit(self) -> None:
        if self.in_flight:
            log.warning("cutting %d requests short", self.in_flight)
            for deadline in list(self.deadlines):
                deadline.cut(errors.service_unavailable())
            await self._quiet(CUT_GRACE_S)
        self.request_exit()

    async def _quiet(self, timeout_s: float) -> None:
        """Until no request is in flight, for at most `timeout_s`."""
        loop = asyncio.get_running_loop()
        ends = loop.time() + timeout_s
        while self.in_flight and loop.time() < ends:
            await asyncio.sleep(0.05)
