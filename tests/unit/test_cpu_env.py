"""The CPU engine's environment: computed from the cores wai finds, never over the user's values,
only on CPU installs."""

from __future__ import annotations

import pytest

from server.engine import cpu_env


@pytest.mark.parametrize(
    ("cpus", "written"),
    [([0], "0"), ([0, 1], "0-1"), ([0, 1, 2, 5], "0-2,5"), ([3, 1, 2, 7, 8], "1-3,7-8"), ([4, 6], "4,6")],
)
def test_cpu_list_writes_vllm_ranges(cpus, written):
    assert cpu_env.cpu_list(cpus) == written


@pytest.mark.parametrize("cpus", [[0], [0, 1], [2, 3], [0, 1, 2]])
def test_a_small_machine_binds_the_model_to_every_core(cpus):
    assert cpu_env.thread_binding(cpus) == {
        "VLLM_CPU_OMP_THREADS_BIND": cpu_env.cpu_list(cpus),
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    }


def test_a_larger_machine_keeps_vllms_own_binding():
    assert cpu_env.thread_binding(list(range(cpu_env.ALL_CORES_BELOW))) == {}
    assert cpu_env.thread_binding(list(range(64))) == {}


def test_engine_env_adds_binding_and_preloads():
    env = cpu_env.engine_env([0, 1], ["/lib/libiomp5.so", "/lib/libtcmalloc.so"], {"PATH": "/bin"})
    assert env == {
        "VLLM_CPU_OMP_THREADS_BIND": "0-1",
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "LD_PRELOAD": "/lib/libiomp5.so:/lib/libtcmalloc.so",
    }


@pytest.mark.parametrize(
    "user",
    [
        {"VLLM_CPU_OMP_THREADS_BIND": "auto"},
        {"VLLM_CPU_OMP_THREADS_BIND": "0"},
        {"VLLM_CPU_NUM_OF_RESERVED_CPU": "1"},
        {"VLLM_CPU_OMP_THREADS_BIND": "nobind", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"},
    ],
)
def test_the_users_binding_is_kept_whole(user):
    env = cpu_env.engine_env([0, 1], [], dict(user))
    assert "VLLM_CPU_OMP_THREADS_BIND" not in env
    assert "VLLM_CPU_NUM_OF_RESERVED_CPU" not in env


@pytest.mark.parametrize("preload", ["", "/opt/libjemalloc.so"])
def test_the_users_preload_is_kept(preload):
    assert "LD_PRELOAD" not in cpu_env.engine_env([0, 1], ["/lib/libiomp5.so"], {"LD_PRELOAD": preload})


def test_no_preload_when_no_library_is_installed():
    assert "LD_PRELOAD" not in cpu_env.engine_env([0, 1], [], {})


def test_preloads_name_only_files_that_exist(tmp_path, monkeypatch):
    library = tmp_path / "libiomp5.so"
    monkeypatch.setattr(cpu_env, "installed_file", lambda dist, name: str(library) if library.exists() else None)
    assert cpu_env.preloads() == []
    library.write_bytes(b"")
    assert cpu_env.preloads() == [str(library)]


def test_installed_file_finds_a_distributions_file_and_not_a_missing_one():
    found = cpu_env.installed_file("pytest", "__init__.py")
    assert found is not None and found.endswith("__init__.py")
    assert cpu_env.installed_file("pytest", "no-such-file.so") is None
    assert cpu_env.installed_file("no-such-distribution-wai", "libiomp5.so") is None


def test_apply_sets_only_what_is_missing(monkeypatch):
    monkeypatch.setattr(cpu_env, "is_cpu_install", lambda: True)
    monkeypatch.setattr(cpu_env, "usable_cpus", lambda: [0, 1])
    monkeypatch.setattr(cpu_env, "preloads", lambda: ["/lib/libiomp5.so"])
    environ = {"LD_PRELOAD": "/mine.so"}
    added = cpu_env.apply_cpu_engine_env(environ)
    assert added == {"VLLM_CPU_OMP_THREADS_BIND": "0-1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    assert environ == {"LD_PRELOAD": "/mine.so", **added}


def test_a_gpu_install_is_left_untouched(monkeypatch):
    monkeypatch.setattr(cpu_env, "is_cpu_install", lambda: False)
    monkeypatch.setattr(cpu_env, "usable_cpus", lambda: [0, 1])
    monkeypatch.setattr(cpu_env, "preloads", lambda: ["/lib/libiomp5.so"])
    environ: dict[str, str] = {}
    assert cpu_env.apply_cpu_engine_env(environ) == {}
    assert environ == {}


def test_usable_cpus_follow_the_affinity_mask(monkeypatch):
    monkeypatch.setattr(cpu_env.os, "sched_getaffinity", lambda pid: {3, 1})
    assert cpu_env.usable_cpus() == [1, 3]


# /proc/cpuinfo excerpts: an AVX2-only x86 CPU, one with AMX, one with AVX512-BF16 alone, and an Arm one.
AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu sse2 avx avx2 fma\n"
AMX = "processor\t: 0\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
AVX512_BF16 = "processor\t: 0\nflags\t\t: avx2 avx512f avx512_bf16\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\nCPU implementer\t: 0x41\n"


@pytest.mark.parametrize(
    ("cpuinfo", "dtype"),
    [(AVX2_ONLY, "float32"), (AMX, "bfloat16"), (AVX512_BF16, "bfloat16"), (ARM_BF16, "bfloat16"), ("", "float32")],
    ids=["avx2-only", "amx", "avx512-bf16", "arm-bf16", "no-flags"],
)
def test_auto_dtype_is_bfloat16_only_where_the_cpu_computes_it(cpuinfo, dtype):
    assert cpu_env.dtype_for(cpu_env.cpu_flags(cpuinfo)) == dtype


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """Sets the machine wai sees: its /proc/cpuinfo text (None: no such file) and whether vllm-cpu is installed."""
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(cpu_env, "CPUINFO", cpuinfo)

    def set_machine(text: str | None, cpu_install: bool = True) -> None:
        if text is not None:
            cpuinfo.write_text(text)
        monkeypatch.setattr(cpu_env, "is_cpu_install", lambda: cpu_install)

    return set_machine


def test_auto_dtype_reads_this_machines_cpuinfo_on_a_cpu_install(machine):
    machine(None)
    assert cpu_env.engine_dtype("auto") == "auto"  # no cpuinfo (not Linux): vLLM's own choice
    machine(AVX2_ONLY)
    assert cpu_env.engine_dtype("auto") == "float32"
    machine(AMX)
    assert cpu_env.engine_dtype("auto") == "bfloat16"
    assert cpu_env.engine_dtype("float32") == "float32"  # a configured dtype is the user's
    assert cpu_env.engine_dtype("float16") == "float16"


def test_auto_dtype_on_a_gpu_install_is_vllms(machine):
    machine(AVX2_ONLY, cpu_install=False)
    assert cpu_env.engine_dtype("auto") == "auto"


def test_the_engine_arguments_carry_the_resolved_dtype(machine):
    from server.config import load_settings
    from server.engine.engine_args import engine_arg_values, serve_flags

    machine(AVX2_ONLY)
    model = load_settings("configs/default.yaml").models[0]
    model.engine.dtype = "auto"
    assert engine_arg_values(model, "/m")["dtype"] == "float32"
    flags = serve_flags(model, "/m")
    assert flags[flags.index("--dtype") + 1] == "float32"  # make bench's vllm serve gets the same
