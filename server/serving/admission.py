"""Backpressure: how many requests one model takes before it answers 429 instead of queueing.

A request holds a place from the moment it goes to the engine until its last delta. Until its
first delta it is waiting (in the engine's queue, or in its prefill); then it is running. At most
`max_waiting` requests may wait, holding at most `max_waiting_prompt_tokens` prompt tokens between
them (one request always may, however long: the context window bounds it); anything beyond is
refused at once with 429 / 3040 and `Retry-After`, so latency never grows without limit in a
silent queue. `reject_if_busy` refuses as soon as the engine's running slots (`max_num_seqs`) are
all taken, as the hosted run endpoint's `rejectIfBusy` does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from server import errors


@dataclass
class Place:
    """One admitted request's place: waiting until `started()`, running after."""

    admission: Admission
    prompt_tokens: int
    running: bool = False

    def started(self) -> None:
        if not self.running:
            self.running = True
            self.admission.waiting -= 1
            self.admission.waiting_tokens -= self.prompt_tokens
            self.admission.running += 1


@dataclass
class Admission:
    max_running: int  # the engine's max_num_seqs
    max_waiting: int
    max_waiting_prompt_tokens: int
    running: int = 0
    waiting: int = 0
    waiting_tokens: int = 0

    def busy(self) -> bool:
        return self.running + self.waiting >= self.max_running

    @contextmanager
    def admit(self, prompt_tokens: int, reject_if_busy: bool = False) -> Iterator[Place]:
        """A place for a request of `prompt_tokens`, held until the block ends; 429 when there is none."""
        if reject_if_busy and self.busy():
            raise errors.capacity_exceeded()
        if self.waiting >= self.max_waiting or (
            self.waiting and self.waiting_tokens + prompt_tokens > self.max_waiting_prompt_tokens
        ):
            raise errors.capacity_exceeded()
        place = Place(self, prompt_tokens)
        self.waiting += 1
        self.waiting_tokens += prompt_tokens
        try:
            yield place
        finally:
            if place.running:
                self.running -= 1
            else:
                self.waiting -= 1
                self.waiting_tokens -= prompt_tokens
