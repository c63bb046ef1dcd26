"""`make bench-frontend`: the serving layer's own ceiling, wai against `vllm serve`.

It runs on an engine so fast (benchmarks/tiny_model.py: one layer, hidden size 64) that the API front
ends are the limit.

Serves the tiny model with `wai serve` and with vLLM's OpenAI server on the same engine arguments,
drives vllm-serve (OpenAI chat), wai-openai (OpenAI chat) and wai-run (Workers AI run endpoint,
streamed, padding on) interleaved round by round at each level of concurrent streams, every request
generating exactly --output-tokens. A fourth series, floor (benchmarks/floor.py), is a bare app on
vLLM's AsyncLLM and uvicorn with the same engine arguments: the least any front end on those two
costs per token, against which each server's cost reads. Per series and level: output tokens/s, TTFT
and ITL, the CPU time of each server's front-end processes (engine core and workers left out) per
token streamed to clients, and the load generator's own CPU, which shows it was not the limit.
Report in --out.

    python -m benchmarks.frontend [--levels 64,256,1024] [--requests 256,1024,4096] [--output-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmarks.bench import generated_tokens
from benchmarks.tiny_model import DEFAULT_DIR as TINY_DIR
from loadtests.servers import free_port, running

ROOT = Path(__file__).resolve().parents[1]
MODEL = "@cf/wai/tiny-bench"
BASE = "vllm-serve"  # every ratio is a series over this one
FLOOR = "floor"
# Process titles vLLM gives its engine side; every other process of a server's tree is front end
# (the API server, and any further API processes, vLLM's "VLLM::APIServer_N" included).
ENGINE_TITLES = ("VLLM::EngineCore", "VLLM::Worker")


def is_engine(name: str, cmdline: list[str]) -> bool:
    """Whether a process is the engine core or a worker, by its title (the kernel keeps 15 characters
    of a name; the command line has it whole)."""
    title = " ".join(cmdline)
    return any(title.startswith(t) or name == t[:15] or name.startswith(t) for t in ENGINE_TITLES)


def front_end_cpu(pid: int) -> dict[tuple[int, float], float]:
    """CPU seconds so far of each front-end process in the server's tree, by (pid, start time)."""
    import psutil

    root = psutil.Process(pid)
    times = {}
    for process in [root, *root.children(recursive=True)]:
        try:
            with process.oneshot():
                if is_engine(process.name(), process.cmdline()):
                    continue
                cpu = process.cpu_times()
                times[(process.pid, process.create_time())] = cpu.user + cpu.system
        except psutil.NoSuchProcess:
            continue
    return times


def process_titles(pid: int) -> dict[str, list[str]]:
    """The server's processes, front end and engine side, by title: shows what the CPU figure covers."""
    import psutil

    root = psutil.Process(pid)
    titles: dict[str, list[str]] = {"front_end": [], "engine": []}
    for process in [root, *root.children(recursive=True)]:
        name, cmdline = process.name(), process.cmdline()
        titles["engine" if is_engine(name, cmdline) else "front_end"].append(" ".join(cmdline).strip()[:80] or name)
    return titles


def cpu_spent(before: dict[Any, float], after: dict[Any, float]) -> float:
    """CPU seconds between two snapshots; a process started in between counts from zero."""
    return sum(seconds - before.get(key, 0.0) for key, seconds in after.items())


def process_cpu(pids: Iterable[int]) -> dict[tuple[int, float], float]:
    """CPU seconds so far of each of these processes (the load generator's)."""
    import psutil

    times = {}
    for pid in pids:
        process = psutil.Process(pid)
        cpu = process.cpu_times()
        times[(pid, process.create_time())] = cpu.user + cpu.system
    return times


@dataclass
class Cost:
    """What one series cost at one level, summed over its slices of every round."""

    front_end_cpu_s: float = 0.0
    loadgen_cpu_s: float = 0.0
    wall_s: float = 0.0
    engine_tokens: float = 0.0


@dataclass
class Meter:
    """Snapshots around each slice of load: the server's front-end CPU, the load generator's CPU, the
    wall time and the engine's token counter. The counter is read outside the CPU window, so that
    reading it costs the server nothing that is measured."""

    servers: dict[str, tuple[int, str]]  # series -> (server pid, base URL)
    loadgen_pids: list[int]
    costs: dict[tuple[str, float], Cost] = field(default_factory=dict)

    @asynccontextmanager
    async def watch(self, target: Any, level: float) -> AsyncIterator[None]:
        pid, url = self.servers[target.label]
        tokens = generated_tokens(url)
        server, loadgen, began = front_end_cpu(pid), process_cpu(self.loadgen_pids), time.perf_counter()
        yield
        wall = time.perf_counter() - began
        server_after, loadgen_after = front_end_cpu(pid), process_cpu(self.loadgen_pids)
        cost = self.costs.setdefault((target.label, level), Cost())
        cost.wall_s += wall
        cost.front_end_cpu_s += cpu_spent(server, server_after)
        cost.loadgen_cpu_s += cpu_spent(loadgen, loadgen_after)
        cost.engine_tokens += generated_tokens(url) - tokens


def series_row(summary: dict[str, Any], cost: Cost, processes: int) -> dict[str, Any]:
    """One series at one level: the load generator's figures and what serving them cost."""
    tokens = summary["output_tokens"]
    return {
        "requests": summary["requests"],
        "failed": summary["failed"],
        "output_tokens": tokens,
        "mean_output_tokens": summary["mean_output_tokens"],
        "engine_tokens": cost.engine_tokens,
        "output_throughput": summary["output_throughput"],
        "ttft_ms": {p: summary["ttft_ms"][p] for p in ("p50", "p99")},
        "itl_ms": {p: summary["itl_ms"][p] for p in ("p50", "p99")},
        "front_end_cpu_s": cost.front_end_cpu_s,
        "front_end_cpu_us_per_token": 1e6 * cost.front_end_cpu_s / tokens if tokens else None,
        "loadgen_cpu_s": cost.loadgen_cpu_s,
        "loadgen_wall_s": cost.wall_s,
        "loadgen_processes": processes,
        "loadgen_cpu_pct": 100 * cost.loadgen_cpu_s / cost.wall_s if cost.wall_s else None,
    }


def with_ratios(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each other series' tokens/s and CPU per token over vllm serve's at the same level."""
    base = rows[BASE]

    def over(key: str, row: dict[str, Any]) -> float | None:
        return row[key] / base[key] if row[key] is not None and base[key] else None

    for name, row in rows.items():
        if name != BASE:
            row["ratios"] = {
                "output_throughput": over("output_throughput", row),
                "front_end_cpu_us_per_token": over("front_end_cpu_us_per_token", row),
            }
    return rows


def loadgen_saturated(row: dict[str, Any]) -> bool:
    """Whether the load generator's processes averaged 90 % of a core or more: then it may be the limit."""
    return row["loadgen_cpu_pct"] is not None and row["loadgen_cpu_pct"] >= 90 * row["loadgen_processes"]


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# The serving layer's ceiling: wai against `vllm serve` on a tiny model",
        "",
        f"{report['output_tokens']} output tokens per request, {report['loadgen_processes']} load generator "
        f"process(es), engine: `{shlex.join(report['engine_flags'])}`.",
        "Front-end CPU: the server's processes but the engine core and workers, per token streamed to clients. "
        "Load generator CPU: % of one core, all its processes together, while the series ran.",
    ]
    header = (
        "| series | requests (failed) | out tok/s | TTFT p50 / p99 (ms) | ITL p50 / p99 (ms) "
        "| front-end CPU µs/token | engine tokens / streamed | loadgen CPU % | tok/s ratio | CPU/token ratio |"
    )
    for level in report["levels"]:
        lines += ["", f"## {level['level']:g} concurrent streams ({level['rounds']} rounds)", "", header]
        lines.append("|" + "---|" * 10)
        for name, row in level["series"].items():
            ratios = row.get("ratios", {})
            check = row["engine_tokens"] / row["output_tokens"] if row["output_tokens"] else None
            lines.append(
                f"| {name} | {row['requests']} ({row['failed']}) | {_fmt(row['output_throughput'])} "
                f"| {_fmt(row['ttft_ms']['p50'])} / {_fmt(row['ttft_ms']['p99'])} "
                f"| {_fmt(row['itl_ms']['p50'], 2)} / {_fmt(row['itl_ms']['p99'], 2)} "
                f"| {_fmt(row['front_end_cpu_us_per_token'], 0)} | {_fmt(check, 3)} "
                f"| {_fmt(row['loadgen_cpu_pct'], 0)} "
                f"| {_fmt(ratios.get('output_throughput'), 3)} | {_fmt(ratios.get('front_end_cpu_us_per_token'), 3)} |"
            )
        busy = [name for name, row in level["series"].items() if loadgen_saturated(row)]
        if busy:
            lines += ["", f"The load generator was near a full core per process for {', '.join(busy)}: "]
            lines[-1] += "those figures may be its limit; rerun with more --processes on a machine with the cores."
    return "\n".join(lines) + "\n"


def wai_config(model_dir: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """A wai config serving only the tiny model: no embeddings model, LoRA off, padding on."""
    return {
        "host": "127.0.0.1",
        "api_keys": [],
        "streaming": {"padding": True},
        "batch": {"db_path": str(out / "batch.sqlite3")},
        "models": [
            {
                "name": MODEL,
                "description": "a one-layer random-weight Llama, for measuring the serving layer",
                "weights": {"path": str(model_dir)},
                "context_window": args.max_model_len,
                "default_max_tokens": args.output_tokens,
                "engine": {
                    "dtype": "float32",
                    "max_model_len": args.max_model_len,
                    "kv_cache_gib": args.kv_cache_gib,
                    "max_num_seqs": args.max_num_seqs,
                    "enforce_eager": True,
                },
                "lora": {"enabled": False},
            }
        ],
    }


def wai_serve_has(flag: str) -> bool:
    help_text = subprocess.run(
        [sys.executable, "-m", "server.cli", "serve", "--help"], capture_output=True, text=True, cwd=ROOT
    ).stdout
    return flag in help_text


def default_processes() -> int:
    """Load generator processes: one per four cores, at most four, at least one."""
    return max(1, min(4, (os.cpu_count() or 1) // 4))


def _counts(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.frontend", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"), help="whose tokenizer to use")
    parser.add_argument("--out", type=Path, default=ROOT / "test-artifacts" / "bench-frontend")
    parser.add_argument("--model-dir", type=Path, default=TINY_DIR, help="where the tiny model is built")
    parser.add_argument("--levels", type=_counts, default=[64, 256, 1024], help="concurrent streams, e.g. 64,256")
    parser.add_argument(
        "--requests", type=_counts, help="per series at each level: one count or one per level (default 4 x level)"
    )
    parser.add_argument("--output-tokens", type=int, default=64, help="every request generates exactly this many")
    parser.add_argument("--input-words", type=int, default=16, help="prompt length (random words, ~1 token each)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per level (default: waves of 2x the level)")
    parser.add_argument("--warmup", type=int, default=16, help="requests per series before measuring")
    parser.add_argument(
        "--processes", type=int, default=default_processes(), help="load generator processes (default: cores / 4)"
    )
    parser.add_argument("--api-processes", type=int, default=1, help="wai serve --api-processes, where it has it")
    parser.add_argument("--max-num-seqs", type=int, default=1024)
    parser.add_argument("--max-model-len", type=int, default=512)
    parser.add_argument("--kv-cache-gib", type=float, default=0.25, help="~2M tokens of the tiny model's cache")
    args = parser.parse_args(argv)
    args.requests = args.requests or [4 * level for level in args.levels]
    if len(args.requests) not in (1, len(args.levels)):
        parser.error("--requests takes one count, or one per level")
    if args.max_num_seqs < max(args.levels):
        parser.error("--max-num-seqs must hold the highest level's streams")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from benchmarks.tiny_model import build, tokenizer_dir
    from server.config import load_settings
    from server.engine.cpu_env import cpu_engine_env
    from server.engine.engine_args import serve_flags

    api_flags: list[str] = []
    if args.api_processes > 1:
        if not wai_serve_has("--api-processes"):
            print(
                "bench-frontend: this `wai serve` has no --api-processes; leave --api-processes at 1", file=sys.stderr
            )
            return 2
        api_flags = ["--api-processes", str(args.api_processes)]
    args.out.mkdir(parents=True, exist_ok=True)
    model_dir = build(args.model_dir.resolve(), tokenizer_dir(args.config))
    config_path = args.out / "wai.yaml"
    config_path.write_text(yaml.safe_dump(wai_config(model_dir, args.out.resolve(), args), sort_keys=False))
    model = load_settings(str(config_path)).models[0]
    flags = serve_flags(model, str(model_dir))
    wai_port, vllm_port = free_port(), free_port()
    wai_url, vllm_url = f"http://127.0.0.1:{wai_port}", f"http://127.0.0.1:{vllm_port}"
    wai_cmd = [sys.executable, "-m", "server.cli", "serve", "--config", str(config_path), "--port", str(wai_port)]
    wai_cmd += api_flags
    vllm_cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1"]
    vllm_cmd += ["--port", str(vllm_port), *flags]
    floor_port = free_port()
    floor_url = f"http://127.0.0.1:{floor_port}"
    floor_cmd = [sys.executable, "-m", "benchmarks.floor", "--config", str(config_path), "--port", str(floor_port)]
    record: dict[str, Any] = {
        "wai_command": shlex.join(wai_cmd),
        "vllm_command": shlex.join(vllm_cmd),
        "floor_command": shlex.join(floor_cmd),
        "engine_flags": flags,
        "output_tokens": args.output_tokens,
        "loadgen_processes": args.processes,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out
    began = time.monotonic()
    with ExitStack() as stack:
        env = {"WAI_API_KEYS": ""}  # both on loopback, without keys
        # They start at once (each waits for its own readiness), which shortens the wait on a machine
        # with cores to spare. The CPU engine environment wai computes for its own engine
        # (server/engine/cpu_env.py) goes to the other two.
        with ThreadPoolExecutor(3) as starting:
            wai_start = starting.submit(
                stack.enter_context, running("wai", wai_cmd, f"{wai_url}/readyz", args.out / "wai.log", 900, env)
            )
            vllm_start = starting.submit(
                stack.enter_context,
                running("vllm serve", vllm_cmd, f"{vllm_url}/health", args.out / "vllm.log", 900, cpu_engine_env()),
            )
            floor_start = starting.submit(
                stack.enter_context,
                running(FLOOR, floor_cmd, f"{floor_url}/health", args.out / "floor.log", 900, cpu_engine_env()),
            )
        wai, vllm, floor = wai_start.result(), vllm_start.result(), floor_start.result()
        servers = {
            BASE: (vllm.pid, vllm_url),
            "wai-openai": (wai.pid, wai_url),
            "wai-run": (wai.pid, wai_url),
            FLOOR: (floor.pid, floor_url),
        }
        record["processes"] = {
            "wai": process_titles(wai.pid),
            "vllm serve": process_titles(vllm.pid),
            FLOOR: process_titles(floor.pid),
        }
        record["levels"] = asyncio.run(measure(args, servers))
    record["duration_s"] = time.monotonic() - began
    save(record, args.out)
    print("\n" + markdown(record))
    print(f"bench-frontend report: {args.out / 'frontend.json'}, {args.out / 'frontend.md'}")
    return 0


async def measure(args: argparse.Namespace, servers: dict[str, tuple[int, str]]) -> list[dict[str, Any]]:
    """Every level, interleaved round by round across the series, with their costs."""
    from loadtests.prompts import synthetic_prompts
    from loadtests.protocols import Sampling, Target
    from loadtests.runner import LoadPlan, LoadProcesses, run_load
    from loadtests.stats import summarize

    # In this order every series follows another server's, round after round (the runner rotates the
    # order): the first slice on a server that sat idle pays for waking it, and neither wai series
    # should have the other warm it up.
    targets = [
        Target(BASE, servers[BASE][1], "openai", MODEL),
        Target("wai-openai", servers["wai-openai"][1], "openai", MODEL),
        Target(FLOOR, servers[FLOOR][1], "openai", MODEL),
        Target("wai-run", servers["wai-run"][1], "workers-ai", MODEL),
    ]
    plan = LoadPlan(
        mode="closed",
        levels=[float(level) for level in args.levels],
        num_requests=args.requests if len(args.requests) > 1 else args.requests[0],
        warmup=args.warmup,
        rounds=args.rounds,
        light=True,
        processes=args.processes,
    )
    prompts = synthetic_prompts(max(args.requests), args.input_words, args.output_tokens)
    # Greedy, no ignore_eos: the tiny model never picks end-of-sequence, so every series (the Workers
    # AI endpoint has no ignore_eos) generates exactly max_tokens through the same sampling path.
    sampling = Sampling(temperature=0.0)
    pool = LoadProcesses(args.processes, max(args.levels), plan.timeout_s, light=True) if args.processes > 1 else None
    try:
        meter = Meter(servers, [os.getpid(), *(pool.pids if pool else [])])
        results = await run_load(
            targets, prompts, sampling, plan, on_level=_announce, watch=meter.watch, processes=pool
        )
    finally:
        if pool is not None:
            pool.close()
    levels = []
    for result in results:
        rows = {
            t.label: series_row(
                summarize(result.records[t.label], result.busy_s[t.label]),
                meter.costs[(t.label, result.level)],
                args.processes,
            )
            for t in targets
        }
        levels.append({"level": result.level, "rounds": result.rounds, "series": with_ratios(rows)})
    return levels


def _announce(level: float) -> None:
    print(f"level: {level:g} concurrent streams", file=sys.stderr, flush=True)


def save(record: dict[str, Any], out: Path) -> None:
    from loadtests.report import machine

    (out / "frontend.json").write_text(json.dumps({**record, "machine": machine()}, indent=1) + "\n")
    (out / "frontend.md").write_text(markdown(record))


if __name__ == "__main__":
    sys.exit(main())
