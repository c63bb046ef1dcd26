"""gpu_offline.sh runs `make gpu-check`'s steps from the install it made: the node's wai wheel carries the
check's scripts and configs laid out as in the repository, and on a machine without a GPU the verdict is
fail, with the reason, and so is the script's exit status."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.bundle.helpers import Bundle, run_node_script

CHECK_FILES = (
    "scripts/gpu_check.py",
    "scripts/gpu_check_steps.py",
    "scripts/gpu_check_fidelity.py",
    "scripts/gpu_check_load.py",
    "scripts/gpu_check_model.py",
    "scripts/gpu_check_report.py",
    "benchmarks/frontend.py",
    "configs/llama-3-8b-dummy.yaml",
    "configs/templates/llama-3-instruct.jinja",
)


def test_the_node_script_runs_the_check_from_the_install_and_fails_without_a_gpu(
    bundle: Bundle, tmp_path: Path
) -> None:
    target = tmp_path / "install"
    result = run_node_script(bundle.dir, target, sys.executable, "--", "--nvidia-smi", "nvidia-smi-absent-here")
    assert result.returncode != 0, result.stdout
    for name in CHECK_FILES:
        assert (target / name).is_file(), name
    report = json.loads((target / "gpu-check" / "gpu-check.json").read_text())
    assert report["config"] == "configs/llama-3-8b-dummy.yaml"
    assert report["verdict"] == "fail"
    gpu = next(s for s in report["steps"] if s["name"] == "gpu")
    assert gpu["verdict"] == "fail" and gpu["reason"].startswith("no GPU")
    assert "verdict: fail: gpu: no GPU" in result.stdout
    assert f"cd {target} && " in result.stdout and "scripts/gpu_check.py --config configs/llama-3-8b-dummy.yaml" in (
        result.stdout
    )
