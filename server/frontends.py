"""`wai serve --api-processes N`: N front-end processes answer HTTP on one engine per model.

One Python process tops out at a few thousand streamed tokens per second (DESIGN.md), less than a
GPU generates; so, as `vllm serve --api-server-count N` does, the `wai serve` process becomes the
supervisor of N front ends that share each model's engine core:

1. It makes a fresh folder for the front ends' Prometheus series (server/metrics.py) and clears
   what an interrupted upload left in the fine-tune store (each front end then leaves it alone).
2. It binds the HTTP port as N listening sockets with SO_REUSEPORT, one per front end: the kernel
   spreads new connections over them, and a connection stays with its front end.
3. It binds each model's engine listeners (server/engine/shared_engine.py) and spawns the front
   ends: each runs wai's app and uvicorn on its socket (`create_app` with a `FrontEnd`), its
   engines clients of the shared cores; only the first runs batch items (server/batch/jobs.py).
4. It starts the engine cores, one model after another, and watches the front ends.

Stopping: a SIGTERM or SIGINT to the supervisor goes on to every front end, which drains as a
single server does (server/lifecycle.py); once all have exited, the engine cores stop and the
supervisor exits 0. A second signal goes on too: the front ends stop at once. A front end that
exits on its own (its engine died, or it crashed) makes the supervisor stop the others (they drain)
and exit 1. Front ends run in their own process group, so that a Ctrl-C in a terminal reaches them
once, through the supervisor; signal the supervisor, not the group (systemd: `KillMode=mixed`).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import TYPE_CHECKING, Any

from server import metrics
from server.app import FrontEnd, lora_base_shapes, resolve_checkpoints
from server.config import Settings
from server.lifecycle import CUT_GRACE_S
from server.serving.lora import clear_leftovers

if TYPE_CHECKING:
    from server.engine.shared_engine import SharedEngine

log = logging.getLogger("wai.frontends")

BACKLOG = 2048  # uvicorn's default
# After the drain: the cut requests' last events, then uvicorn's own graceful shutdown (5 s).
EXIT_GRACE_S = CUT_GRACE_S + 10.0
STOP_NOW_S = 10.0  # after a second signal, or a stop while the engines start
WATCH_EVERY_S = 1.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class Stopped(Exception):
    """A signal arrived while the engines were starting."""


# A front end's main: (settings as fields, its HTTP socket, its engines' sockets) -> never returns.
FrontEndMain = Callable[[dict[str, Any], socket.socket, FrontEnd], None]


def serve(settings: Settings, front_end_main: FrontEndMain) -> int:
    """Run `settings.api_processes` processes of `front_end_main` on shared engines until a signal
    or a failure; the exit code."""
    with tempfile.TemporaryDirectory(prefix="wai-metrics-") as metrics_dir:
        # Set before any front end or engine core starts: each must write its series there.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        # Engine cores start after the front ends, whose sockets a helper thread hands over: fork
        # would copy that thread's locks, so the cores are spawned (vLLM's CPU engine always is).
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        return Supervisor(settings, front_end_main).run()


def bind_http(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` listening sockets on one address; the kernel spreads new connections over them."""
    family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, kind)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            address = sock.getsockname()  # with port 0, the others join the port the first was given
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Supervisor:
    def __init__(self, settings: Settings, front_end_main: FrontEndMain):
        self.settings = settings
        self.front_end_main = front_end_main
        self.count = settings.api_processes
        self.front_ends: list[BaseProcess] = []
        self.engines: list[SharedEngine] = []
        self.signals = 0
        self.starting = True
        self.stop_by = float("inf")  # when front ends still running get SIGKILL

    def run(self) -> int:
        # What a single server refuses at start (missing weights, an unreadable base model) fails
        # here as there, before any process starts.
        checkpoints = resolve_checkpoints(self.settings)
        for model in self.settings.models:
            if model.lora.enabled:
                lora_base_shapes(model, checkpoints[model.name])
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        try:
            self._start(checkpoints)
            return self._watch()
        except Stopped:
            log.warning("stopped while starting")
            return 0
        except Exception:
            log.exception("the front ends or the engines failed to start")
            return 1
        finally:
            self._stop_front_ends()
            while self.engines:  # each freed once stopped: vLLM's listeners clean up when freed, not at exit
                self.engines.pop().stop()
            for front_end in self.front_ends:
                metrics.forget_process(front_end.pid or 0)

    def _start(self, checkpoints: dict[str, str]) -> None:
        from server.engine.cpu_env import apply_cpu_engine_env
        from server.engine.shared_engine import SharedEngine

        clear_leftovers(self.settings.adapter_store_dir)
        sockets = bind_http(self.settings.host, self.settings.port, self.count)
        log.info("serving on %s:%d with %d front-end processes", self.settings.host, self.settings.port, self.count)
        try:
            for model in self.settings.models:
                self.engines.append(SharedEngine(model, checkpoints[model.name], self.count))
            context = multiprocessing.get_context("spawn")
            fields = self.settings.model_dump()
            for index in range(self.count):
                client_sockets = {engine.model.name: engine.client_sockets(index) for engine in self.engines}
                process = context.Process(
                    target=self.front_end_main,
                    args=(fields, sockets[index], FrontEnd(index, self.count, client_sockets)),
                    name=f"wai-front-end-{index}",
                )
                process.start()
                self.front_ends.append(process)
        finally:  # the front ends hold their own copies now
            for sock in sockets:
                sock.close()
            for engine in self.engines:
                engine.handed_over()
        apply_cpu_engine_env()  # for the engine cores only: the front ends have started
        for engine in self.engines:  # one after another: loading at once, they would compete for cores
            engine.start(self.front_ends)
        self.starting = False

    def _watch(self) -> int:
        """Until every front end has exited; 0 when they stopped on a signal and each exited 0."""
        failed = False
        while running := [p for p in self.front_ends if p.exitcode is None]:
            wait([p.sentinel for p in running], WATCH_EVERY_S)  # a signal does not end the wait
            if time.monotonic() >= self.stop_by:
                break
            exited = [p for p in running if p.exitcode is not None]
            for process in exited:
                metrics.forget_process(process.pid or 0)
                if process.exitcode != 0 or not self.signals:
                    failed = True
                    log.error("front end %s exited with %s: stopping the others", process.name, process.exitcode)
            if failed and self.stop_by == float("inf"):
                self._pass_on(self.settings.limits.drain_timeout_s + EXIT_GRACE_S)
        return 1 if failed or any(p.exitcode != 0 for p in self.front_ends) else 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1
        log.warning("signal %d: stopping the front ends (%s)", signum, "drain" if self.signals == 1 else "at once")
        if self.starting:
            self._pass_on(STOP_NOW_S)
            if self.signals == 1:
                raise Stopped
            return
        self._pass_on(self.settings.limits.drain_timeout_s + EXIT_GRACE_S if self.signals == 1 else STOP_NOW_S)

    def _pass_on(self, within_s: float) -> None:
        """SIGTERM to every front end still running (a first one drains, a second stops at once);
        those still running `within_s` from now are killed."""
        self.stop_by = min(self.stop_by, time.monotonic() + within_s)
        for process in self.front_ends:
            if process.exitcode is None and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)

    def _stop_front_ends(self) -> None:
        if any(p.exitcode is None for p in self.front_ends) and self.stop_by == float("inf"):
            self._pass_on(STOP_NOW_S)
        for process in self.front_ends:
            process.join(max(self.stop_by - time.monotonic(), 0.0) if self.stop_by < float("inf") else None)
            if process.exitcode is None:
                log.error("front end %s did not stop: killing it", process.name)
                process.kill()
                process.join()


def become_front_end() -> None:
    """First thing in a front-end process: signals come through the supervisor only (see the
    module's docstring), and should the supervisor die without stopping it (a SIGKILL, say), it
    drains and exits."""
    os.setpgrp()
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
