"""Every difference between the vLLM releases wai runs on, 0.26.0 through 0.32.x, in one place.

0.26.0 is the newest release built on torch 2.11, which an offline GPU node carries; 0.32.0 is wai's pin.

Each difference is told apart by what the installed vLLM has, not by its number, so that a release
in between takes whichever form it has. The number is checked once, when the engine layer is first
imported: any other release stops `wai serve` at start-up with the supported range.
The check that wai's use of vLLM holds on both ends of the range: tests/vllm_api/.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from multiprocessing.process import BaseProcess
from typing import Any

import vllm
import vllm.exceptions
import vllm.v1.engine.utils
from vllm.config import VllmConfig
from vllm.v1.engine.utils import CoreEngineProcManager, launch_core_engines
from vllm.v1.executor import Executor

from server.engine.types import UnsupportedVllm
from server.engine.vllm_range import SUPPORTED, supports


def check_version(version: str) -> None:
    if not supports(version):
        raise UnsupportedVllm(
            f"wai runs on {SUPPORTED}, and the installed vLLM is {version}: install a release in that range "
            "(pyproject.toml's extras pin 0.32.0)"
        )


VERSION = vllm.__version__
check_version(VERSION)

# The names only one end of the range has are reached through these, so that the type check of wai
# against either end (tests/vllm_api/) is about wai, not about this module's other branch.
exceptions: Any = vllm.exceptions
engine_utils: Any = vllm.v1.engine.utils

# The errors vLLM raises for a request it refuses (a 4xx in its own server). 0.32 gathers them under
# VLLMClientError; 0.26 has the same classes without that base (two of them are ValueErrors).
CLIENT_ERRORS: tuple[type[Exception], ...] = (
    (exceptions.VLLMClientError,)
    if hasattr(exceptions, "VLLMClientError")
    else (
        exceptions.VLLMValidationError,
        exceptions.VLLMNotFoundError,
        exceptions.VLLMUnprocessableEntityError,
    )
)


class FrontEndListeners:
    """0.32: the supervisor binds each front end's pair of engine sockets (requests in, outputs back)
    before any process starts, and hands them over; the front end adopts them."""

    def __init__(self, config: VllmConfig, count: int):
        self._listeners = engine_utils.bind_engine_zmq_listeners(config, count)
        self.addresses = self._listeners.addresses  # what the engine core connects to

    def client_addresses(self, index: int) -> dict[str, Any]:
        """What front end `index` passes to AsyncLLM as its `client_addresses`."""
        return {
            "input_address": self._listeners.inputs[index].address,
            "output_address": self._listeners.outputs[index].address,
            "input_listener": self._listeners.inputs[index].socket,
            "output_listener": self._listeners.outputs[index].socket,
        }

    def handed_over(self) -> None:
        """The front ends hold their copies: the supervisor's are closed (the socket files stay)."""
        for listener in (*self._listeners.inputs, *self._listeners.outputs):
            listener.close()

    def cleanup(self) -> None:
        self._listeners.cleanup()


class FrontEndAddresses:
    """0.26, which has no listeners to hand over: as its own `vllm serve --api-server-count` does,
    each front end binds its pair of addresses itself, and the engine core connects to them (ZMQ
    queues the core's first messages until the front end has bound)."""

    def __init__(self, config: VllmConfig, count: int):
        # Resolved now (IPC paths on one node, else open ports), since a front end cannot tell the
        # supervisor a port it picked.
        self.addresses = engine_utils.get_engine_zmq_addresses(config, count, defer_api_server_ports=False)

    def client_addresses(self, index: int) -> dict[str, Any]:
        return {"input_address": self.addresses.inputs[index], "output_address": self.addresses.outputs[index]}

    def handed_over(self) -> None:
        """Nothing bound here to close."""

    def cleanup(self) -> None:
        """The socket files a front end that did not close its sockets left behind."""
        for address in (*self.addresses.inputs, *self.addresses.outputs):
            if address.startswith("ipc://"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(address.removeprefix("ipc://"))


def front_end_sockets(config: VllmConfig, count: int) -> FrontEndListeners | FrontEndAddresses:
    """The engine sockets of `count` front ends that share one engine core."""
    if hasattr(engine_utils, "bind_engine_zmq_listeners"):
        return FrontEndListeners(config, count)
    return FrontEndAddresses(config, count)


@contextlib.contextmanager
def launch_engine_core(
    config: VllmConfig, log_stats: bool, addresses: Any, front_ends: Sequence[BaseProcess]
) -> Iterator[CoreEngineProcManager]:
    """vLLM's `launch_core_engines` for an engine core on this node: yields its process manager and,
    on leaving, waits until the core is up. 0.32 also fails the wait if a front end exits meanwhile;
    0.26 does not watch them (the supervisor's watch then sees it)."""
    with launch_core_engines(config, Executor.get_class(config), log_stats, addresses) as launch:
        # 0.26 yields (engine manager, coordinator, addresses, tensor queue); 0.32 an object.
        manager = launch[0] if isinstance(launch, tuple) else launch.engine_manager
        if not isinstance(launch, tuple):
            launch.watched_frontend_processes = front_ends
        assert isinstance(manager, CoreEngineProcManager)
        yield manager
