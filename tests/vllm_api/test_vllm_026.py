"""wai's engine layer against vLLM 0.26.0, the oldest release it runs on, as far as a CPU allows: 0.26's
Python modules (tests/vllm_api/vllm_026.py) first on the path, without its compiled ops.

1. mypy type-checks server/engine against 0.26 as `make lint` does against 0.32: every vLLM module,
   class, function, attribute, field and keyword argument the engine layer uses, as wai's source uses
   it, must exist there with a compatible signature. A copy of wai with a misspelled keyword and a
   misspelled field shows that a break is reported.
2. test_vllm_uses.py (what a type check cannot see), the sampling path from every request field to
   SamplingParams, and the LoRA fix run on 0.26 in a subprocess.
3. `wai serve` on a vLLM outside the range stops at start-up with the range (a faked version).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.vllm_api import vllm_026
from tests.vllm_api.test_vllm_uses import EXPECTED

ROOT = Path(__file__).resolve().parents[2]
# Kept between runs: a cold check of 0.26's modules takes about 80 s, a warm one seconds.
MYPY_CACHE = vllm_026.CACHE / f"vllm-{vllm_026.VERSION}-mypy-cache"
ON_0_26 = [
    "tests/vllm_api/test_vllm_uses.py",
    "tests/unit/test_sampling_path.py",
    "tests/unit/test_vllm_fixes.py",
]


@pytest.fixture(scope="module")
def tree() -> Path:
    return vllm_026.python_tree()


def on_0_26(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree), EXPECTED: vllm_026.VERSION}


def type_check(tree: Path, root: Path) -> list[str]:
    """mypy's errors in wai's engine layer under `root`, against the vLLM in `tree`."""
    command = [sys.executable, "-m", "mypy", "--cache-dir", str(MYPY_CACHE), "server/engine"]
    result = subprocess.run(
        command, cwd=root, env={**os.environ, "MYPYPATH": str(tree)}, capture_output=True, text=True
    )
    # vLLM's own modules are checked too (mypy follows the imports) and have errors of their own.
    assert re.search(r"^(Found \d+ errors? in|Success:)", result.stdout, re.M), result.stdout + result.stderr
    return [line for line in result.stdout.splitlines() if line.startswith("server/")]


def test_engine_layer_type_checks_against_0_26(tree):
    assert type_check(tree, ROOT) == []


def test_type_check_reports_a_misspelled_keyword_and_field(tree, tmp_path):
    shutil.copytree(ROOT / "server", tmp_path / "server", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    engine = tmp_path / "server" / "engine" / "vllm_engine.py"
    source = engine.read_text()
    for right, wrong in (("lora_int_id=", "lora_id="), ("output.num_cached_tokens", "output.num_cached_token")):
        assert right in source
        source = source.replace(right, wrong)
    engine.write_text(source)
    errors = "\n".join(type_check(tree, tmp_path))
    assert 'Unexpected keyword argument "lora_id" for "LoRARequest"' in errors
    assert '"RequestOutput" has no attribute "num_cached_token"' in errors


def test_engine_layer_runs_its_checks_on_0_26(tree):
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *ON_0_26]
    result = subprocess.run(command, cwd=ROOT, env=on_0_26(tree), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]


def test_wai_serve_stops_on_a_vllm_outside_the_range():
    version = "0.33.0"  # every side of the range: test_vllm_uses.py
    fake = f"import sys, vllm; vllm.__version__ = {version!r}; from server.cli import main; sys.exit(main())"
    command = [sys.executable, "-c", fake, "serve", "--config", "configs/llama-3-tiny.yaml", "--port", "0"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"wai: wai runs on vLLM 0.26.0 through 0.32.x, and the installed vLLM is {version}" in result.stderr
