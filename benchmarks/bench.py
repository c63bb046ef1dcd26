"""`make bench`: wai against `vllm serve` on the same checkpoint with the same engine arguments.

Starts both servers on loopback, sweeps concurrency through vLLM's OpenAI endpoint, wai's OpenAI
endpoint and wai's Workers AI run endpoint, interleaved round by round with the same prompts, and
prints each figure of wai over vllm serve. Then checks that `wai loadtest` agrees with
`vllm bench serve` on the same target. Everything lands in --out.

    python -m benchmarks.bench [--config configs/default.yaml] [--out test-artifacts/bench]
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from loadtests import cli as loadtest_cli
from loadtests.servers import free_port, running

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def profiling(pid: int, out: Path, enabled: bool):
    """Sample wai's front-end process with py-spy for the duration of the block (collapsed stacks)."""
    if not enabled:
        yield None
        return
    command = [
        str(Path(sys.executable).with_name("py-spy")),
        "record",
        "--pid",
        str(pid),
        "--format",
        "raw",
        "--rate",
        "50",
        "--output",
        str(out),
        "--nonblocking",
    ]
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield out
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(timeout=60)
        except subprocess.TimeoutExpired:
            spy.kill()


def generated_tokens(base_url: str) -> float:
    """Output tokens the server's engine has generated so far (vLLM's own counter, which both expose)."""
    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("vllm:generation_tokens_total")
    )


def cpu_seconds(pid: int) -> float:
    """CPU time of the server's own process: the front end, without the engine core's process."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


class FrontEndCost:
    """Front-end CPU per generated token, per server, over a block of work. The machine's noise
    slows every process alike but does not add CPU time, so this compares the layers directly."""

    def __init__(self, servers: dict[str, tuple[int, str]]):
        self.servers = servers  # name -> (pid, base URL)
        self.start = {name: (cpu_seconds(pid), generated_tokens(url)) for name, (pid, url) in servers.items()}

    def result(self) -> dict[str, dict[str, float | None]]:
        result = {}
        for name, (pid, url) in self.servers.items():
            cpu0, tokens0 = self.start[name]
            cpu, tokens = cpu_seconds(pid) - cpu0, generated_tokens(url) - tokens0
            result[name] = {
                "cpu_s": cpu,
                "tokens": tokens,
                "cpu_ms_per_token": 1000 * cpu / tokens if tokens else None,
            }
        return result


def top_frames(collapsed: Path, limit: int = 20) -> list[tuple[str, int, float]]:
    """The functions most often on top of the sampled stacks: (frame, samples, share)."""
    counts: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        leaf = stack.split(";")[-1]
        counts[leaf] = counts.get(leaf, 0) + int(n)
        total += int(n)
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:limit]
    return [(frame, n, n / total) for frame, n in ranked] if total else []


def sweep(args: argparse.Namespace, wai_url: str, vllm_url: str, model: str, out: Path) -> tuple[list[str], int]:
    argv = ["--url", vllm_url, "--protocol", "openai", "--label", "vllm-serve"]
    argv += ["--url", wai_url, "--protocol", "openai", "--label", "wai-openai"]
    argv += ["--url", wai_url, "--protocol", "workers-ai", "--label", "wai-run"]
    argv += [
        "--model",
        model,
        "--concurrency",
        args.concurrency,
        "--num-requests",
        str(args.num_requests),
        "--prompts",
        "chat",
        "--output-tokens",
        str(args.output_tokens),
        "--warmup",
        "4",
        "--slo",
        args.slo,
        "--out",
        str(out),
    ]
    print(f"\n$ wai loadtest {shlex.join(argv)}", flush=True)
    return argv, loadtest_cli.main(argv)


VLLM_BENCH = (
    "import argparse, sys\n"
    "from vllm.benchmarks.serve import add_cli_args, main\n"
    "parser = argparse.ArgumentParser()\n"
    "add_cli_args(parser)\n"
    "main(parser.parse_args(sys.argv[1:]))\n"
)


def agreement(args: argparse.Namespace, vllm_url: str, model: str, checkpoint: str, out: Path) -> dict[str, Any]:
    """`vllm bench serve` and `wai loadtest` on the same target with the same load, alternated."""
    c, n, length = args.agreement_concurrency, args.agreement_requests, args.output_tokens
    vllm_argv = [
        "--backend",
        "openai-chat",
        "--base-url",
        vllm_url,
        "--endpoint",
        "/v1/chat/completions",
        "--model",
        model,
        "--tokenizer",
        checkpoint,
        "--dataset-name",
        "random",
        "--random-input-len",
        str(length),
        "--random-output-len",
        str(length),
        "--ignore-eos",
        "--num-prompts",
        str(n),
        "--max-concurrency",
        str(c),
        "--temperature",
        "0",
        "--percentile-metrics",
        "ttft,tpot,itl,e2el",
        "--save-result",
        "--result-dir",
        str(out),
    ]
    ours_argv = [
        "--url",
        vllm_url,
        "--protocol",
        "openai",
        "--model",
        model,
        "--prompts",
        "synthetic",
        "--tokenizer",
        checkpoint,
        "--input-tokens",
        str(length),
        "--output-tokens",
        str(length),
        "--ignore-eos",
        "--concurrency",
        str(c),
        "--num-requests",
        str(n),
        "--warmup",
        "0",
        "--no-progress",
    ]
    runs: dict[str, list[dict[str, float]]] = {"vllm bench serve": [], "wai loadtest": []}
    for i in range(args.agreement_repeats):
        # One after the other (default), or with --agreement-together both at once, each with the
        # same load, so that they see the same machine; `wai loadtest` then starts once vLLM's tool
        # sends its first measured request. Together, throughput agrees closely, but with equal
        # output lengths the two tools' requests stay in lockstep and the later one's prefills queue
        # behind the other's, which moves TTFT between them (docs/benchmarks.md).
        name, folder = f"vllm-bench-{i}.json", out / f"wai-loadtest-{i}"
        vllm_cmd = [sys.executable, "-c", VLLM_BENCH, *vllm_argv, "--result-filename", name]
        ours_cmd = [sys.executable, "-m", "server.cli", "loadtest", *ours_argv, "--out", str(folder)]
        print(f"\n$ python -c '<vllm.benchmarks.serve>' {shlex.join(vllm_argv)} --result-filename {name}")
        print(f"$ wai loadtest {shlex.join([*ours_argv, '--out', str(folder)])}", flush=True)
        out.mkdir(parents=True, exist_ok=True)
        vllm_log = out / f"vllm-bench-{i}.log"
        with vllm_log.open("w") as log:
            theirs = subprocess.Popen(vllm_cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            if not args.agreement_together:
                theirs.wait()
            while "Starting main benchmark run" not in vllm_log.read_text() and theirs.poll() is None:
                time.sleep(0.2)
            ours = subprocess.run(ours_cmd, cwd=ROOT, capture_output=True, text=True)
            theirs.wait()
        print(vllm_log.read_text()[-1500:] + ours.stdout[-2500:], flush=True)
        if theirs.returncode or ours.returncode:
            raise RuntimeError(f"agreement run failed: see {vllm_log}\n{ours.stderr[-2000:]}")
        result = json.loads((out / name).read_text())
        runs["vllm bench serve"].append(
            {"output_throughput": result["output_throughput"], "median_ttft_ms": result["median_ttft_ms"]}
        )
        summary = json.loads((folder / "report.json").read_text())["levels"][0]["summaries"]["A"]
        runs["wai loadtest"].append(
            {"output_throughput": summary["output_throughput"], "median_ttft_ms": summary["ttft_ms"]["p50"]}
        )
    means = {tool: {k: sum(r[k] for r in rs) / len(rs) for k in rs[0]} for tool, rs in runs.items()}
    ratios = {k: means["wai loadtest"][k] / means["vllm bench serve"][k] for k in means["wai loadtest"]}
    return {
        "vllm_bench_argv": vllm_argv,
        "wai_loadtest_argv": ours_argv,
        "runs": runs,
        "means": means,
        "ratio_wai_over_vllm_bench": ratios,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    parser.add_argument("--out", type=Path, default=ROOT / "test-artifacts" / "bench")
    parser.add_argument("--concurrency", default="1,4,16,32")
    parser.add_argument(
        "--num-requests",
        default="16,16,32,64",
        help="per target at each concurrency level (one count, or one per level)",
    )
    parser.add_argument("--output-tokens", type=int, default=128)
    parser.add_argument("--slo", default="ttft=2000,tpot=100")
    parser.add_argument("--profile", action="store_true", help="sample wai with py-spy during the sweep")
    parser.add_argument("--skip-sweep", action="store_true")
    parser.add_argument("--skip-agreement", action="store_true")
    parser.add_argument("--agreement-concurrency", type=int, default=4, help="each tool's")
    parser.add_argument("--agreement-requests", type=int, default=32)
    parser.add_argument("--agreement-repeats", type=int, default=2)
    parser.add_argument("--agreement-together", action="store_true", help="run both tools at the same time")
    args = parser.parse_args(argv)

    from server.config import load_settings
    from server.engine.cpu_env import cpu_engine_env
    from server.engine.engine_args import serve_flags
    from server.prepare import resolve_checkpoint

    settings = load_settings(args.config)
    model = settings.models[0]
    checkpoint = resolve_checkpoint(model, settings.cache_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    wai_port, vllm_port = free_port(), free_port()
    wai_url, vllm_url = f"http://127.0.0.1:{wai_port}", f"http://127.0.0.1:{vllm_port}"
    # No API keys on either side: both bind to loopback only.
    env = {"WAI_API_KEYS": ""}
    wai_cmd = [sys.executable, "-m", "server.cli", "serve", "--config", args.config, "--port", str(wai_port)]
    vllm_cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--host",
        "127.0.0.1",
        "--port",
        str(vllm_port),
        *serve_flags(model, checkpoint),
    ]
    record: dict[str, Any] = {"wai_command": shlex.join(wai_cmd), "vllm_command": shlex.join(vllm_cmd)}

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop both servers on the way out
    with ExitStack() as stack:
        wai = stack.enter_context(running("wai", wai_cmd, f"{wai_url}/readyz", args.out / "wai.log", 900, env))
        # The CPU engine environment wai computes for its own engine (server/engine/cpu_env.py).
        vllm_env = cpu_engine_env()
        vllm = stack.enter_context(
            running("vllm serve", vllm_cmd, f"{vllm_url}/health", args.out / "vllm.log", 900, vllm_env)
        )
        if not args.skip_sweep:
            profile_path = args.out / "wai-profile.txt"
            cost = FrontEndCost({"wai": (wai.pid, wai_url), "vllm serve": (vllm.pid, vllm_url)})
            with profiling(wai.pid, profile_path, args.profile):
                record["sweep_argv"], _ = sweep(args, wai_url, vllm_url, model.name, args.out / "sweep")
            record["front_end_cost"] = cost.result()
            print("\nfront-end CPU per generated token over the sweep (warm-up included):")
            for name, c in record["front_end_cost"].items():
                print(
                    f"  {name:12s} {c['cpu_s']:8.1f} s CPU / {c['tokens']:8.0f} tokens = "
                    f"{c['cpu_ms_per_token'] or 0:.3f} ms per token"
                )
            if args.profile and profile_path.exists():
                record["profile_top"] = top_frames(profile_path)
                print("\nwai front end, most sampled functions:")
                for frame, n, share in record["profile_top"]:
                    print(f"  {share:6.1%} {n:6d}  {frame}")
        save(record, args.out)
        if not args.skip_agreement:
            record["agreement"] = agreement(args, vllm_url, model.name, checkpoint, args.out / "agreement")
            print(
                "\nagreement (wai loadtest / vllm bench serve):",
                json.dumps(record["agreement"]["ratio_wai_over_vllm_bench"]),
                flush=True,
            )
    save(record, args.out)
    print(f"\nbench record: {args.out / 'bench.json'}")
    return 0


def save(record: dict[str, Any], out: Path) -> None:
    from loadtests.report import machine

    (out / "bench.json").write_text(json.dumps({**record, "machine": machine()}, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
