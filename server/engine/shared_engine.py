"""One model's engine core shared by several front-end processes (`wai serve --api-processes N`).

As vLLM's own API-server scale-out does it (`vllm serve --api-server-count`): the supervisor binds
one pair of ZMQ listeners (requests in, outputs back) per front end, starts the engine core, which
connects to every pair, and hands each front end its pair. A front end then builds an AsyncLLM
client on that pair instead of starting an engine of its own (`connect`). On vLLM 0.26, which has
no listeners to hand over, each front end binds its pair itself (engine/vllm_compat.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from multiprocessing.process import BaseProcess
from typing import Any

from vllm.config import VllmConfig
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.usage.usage_lib import UsageContext
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.engine.utils import CoreEngineProcManager

from server.config import ModelConfig
from server.engine.engine_args import engine_arg_values
from server.engine.types import EngineClientSockets
from server.engine.vllm_compat import front_end_sockets, launch_engine_core

log = logging.getLogger("wai.engine")

# The usage context `AsyncLLM.from_engine_args` uses, so that an engine shared by N front ends gets
# exactly the configuration (batch sizes, say) that a single-process server's engine gets.
USAGE = UsageContext.ENGINE_CONTEXT


def shared_engine_config(model: ModelConfig, checkpoint: str, count: int, index: int) -> tuple[VllmConfig, bool]:
    """The engine's configuration as seen by front end `index` of `count` (-1: the supervisor), and
    whether it logs stats (vLLM's Prometheus series)."""
    args = AsyncEngineArgs(**engine_arg_values(model, checkpoint))
    args._api_process_count = count
    args._api_process_rank = index
    return args.create_engine_config(usage_context=USAGE), not args.disable_log_stats


class SharedEngine:
    """A model's engine core, run by the supervisor for `front_ends` front-end processes."""

    def __init__(self, model: ModelConfig, checkpoint: str, front_ends: int):
        self.model = model
        self.front_ends = front_ends
        self._config, self._log_stats = shared_engine_config(model, checkpoint, front_ends, -1)
        # Bound now, before any process starts, so that the engine core and each front end find them.
        self._sockets = front_end_sockets(self._config, front_ends)
        self._cores: CoreEngineProcManager | None = None

    def client_sockets(self, index: int) -> EngineClientSockets:
        return EngineClientSockets(self._sockets.client_addresses(index), index, self.front_ends)

    def handed_over(self) -> None:
        """The front ends hold their copies of the sockets: the supervisor's are closed (their socket
        files stay until `stop`)."""
        self._sockets.handed_over()

    def start(self, front_ends: Sequence[BaseProcess]) -> None:
        """Start the engine core and wait until it is up (on vLLM 0.32, failing if a front end exits
        meanwhile)."""
        with launch_engine_core(self._config, self._log_stats, self._sockets.addresses, front_ends) as cores:
            self._cores = cores
        log.info("the engine of %s is up for %d front ends", self.model.name, self.front_ends)

    def sentinels(self) -> list[Any]:
        return self._cores.sentinels() if self._cores is not None else []

    def stop(self) -> None:
        if self._cores is not None:
            self._cores.shutdown()
        self._sockets.cleanup()


def connect(model: ModelConfig, checkpoint: str, sockets: EngineClientSockets) -> AsyncLLM:
    """A front end's client of the shared engine core (blocks until the core is ready)."""
    config, log_stats = shared_engine_config(model, checkpoint, sockets.count, sockets.index)
    return AsyncLLM.from_vllm_config(
        config,
        usage_context=USAGE,
        enable_log_requests=False,
        disable_log_stats=not log_stats,
        client_addresses=dict(sockets.addresses),
        client_count=sockets.count,
        client_index=sockets.index,
    )
