"""Long commands a test checks, started as soon as collection ends so that they run beside the tiers before.

A real-engine run that starts its own servers (the GPU check's rehearsal, the front-end benchmark) takes
minutes on a small CPU, while most of the suite keeps one core busy and leaves the other idle. A test
marked `@pytest.mark.early(COMMAND)` declares its command; tests/conftest.py starts the commands of the
selected tests one after another in a background thread, and the test waits for its result and checks it.
Their engines run on the last core, so they do not share a core with the test servers' engines (vLLM's
automatic binding puts those on the first). Run alone, a test simply runs its command when it asks.

The same thread then starts what `after_early_commands` was given (the integration tier's servers, which
its tests need only once the tiers before have run), so that their start-up fills the core the commands
leave idle instead of delaying the tests that wait for them.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.repo import ROOT


def last_core_binding() -> dict[str, str]:
    """vLLM's CPU engine bound to the machine's last core, where the suite's own servers leave room."""
    return {"VLLM_CPU_OMP_THREADS_BIND": str((os.cpu_count() or 1) - 1)}


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str
    folder: Path  # the command's own folder, for its output files


@dataclass(eq=False)
class EarlyCommand:
    """A command and its result: `argv(folder)` gives the command line, run in the repository root, and
    `env(folder)` its environment (this one by default), where `folder` is the command's own."""

    name: str
    argv: Callable[[Path], Sequence[str]]
    timeout: float
    env: Callable[[Path], dict[str, str]] = lambda folder: dict(os.environ)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    _claim: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _started: bool = field(default=False, repr=False)
    _finished: Finished | BaseException | None = field(default=None, repr=False)

    def run(self) -> None:
        """Run the command once (a second call does nothing); its result waits in `result()`."""
        with self._claim:
            if self._started:
                return
            self._started = True
        folder = Path(tempfile.mkdtemp(prefix=f"wai-{self.name}-"))
        try:
            done = subprocess.run(
                list(self.argv(folder)),
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                env={**self.env(folder), **last_core_binding()},
            )
            self._finished = Finished(done.returncode, done.stdout, done.stderr, folder)
        except BaseException as e:  # a timeout, say: the test reports it
            self._finished = e
        finally:
            self._done.set()

    def result(self) -> Finished:
        """The command's result, once it has run: started early, or now if nothing started it."""
        self.run()
        self._done.wait()
        if isinstance(self._finished, BaseException):
            raise self._finished
        assert self._finished is not None
        return self._finished


_THEN: list[Callable[[], object]] = []


def after_early_commands(start: Callable[[], object]) -> None:
    """Call `start` on the background thread once the early commands have run (before any, when none
    was selected). It must be harmless to call again: a fixture that needs it first calls it itself."""
    _THEN.append(start)


def start_in_background(commands: list[EarlyCommand]) -> threading.Thread:
    """Run `commands` one after another in a daemon thread (one at a time, so they never contend), then
    the starts given to `after_early_commands`."""

    def run_all() -> None:
        for command in commands:
            command.run()
        for start in list(_THEN):
            with contextlib.suppress(Exception):  # its fixture starts it again, and says why it fails
                start()

    thread = threading.Thread(target=run_all, name="early-commands", daemon=True)
    thread.start()
    return thread
