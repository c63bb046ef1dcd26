"""vLLM 0.26.0's Python modules, for checking wai against the oldest vLLM it runs on.

The published GPU wheel, unzipped without its compiled ops (built on torch 2.11, they do not load beside
this machine's torch; the Python modules import). Cached in ~/.cache/wai: the wheel is downloaded once
(304 MB) into the folder `make gpu-bundle` downloads into, and its sha256 checked; the modules (38 MB)
are unzipped once.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from tests.support.bundle_builder import gpu_bundle

builder: Any = gpu_bundle
# The vLLM the offline bundle carries, as its lock pins it (version and PyPI's sha256).
(VLLM_PIN,) = [pin for pin in builder.read_lock() if pin.name == "vllm"]
VERSION = VLLM_PIN.version
WHEEL = f"vllm-{VERSION}-cp38-abi3-manylinux_2_28_x86_64.whl"
CACHE = Path.home() / ".cache" / "wai"
WHEELS = CACHE / "gpu-bundle" / "wheels"
TREE = CACHE / f"vllm-{VERSION}-python"


def wheel() -> Path:
    """The published wheel, downloaded when the cache lacks it."""
    path = WHEELS / WHEEL
    if not path.exists():
        WHEELS.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", f"vllm=={VERSION}", "--no-deps", "--only-binary=:all:"]
        command += ["--python-version", "3.12", "--platform", "manylinux_2_28_x86_64", "--dest", str(WHEELS)]
        subprocess.run([*command, "--quiet", "--disable-pip-version-check"], check=True)
    if builder.sha256_of(path) not in VLLM_PIN.hashes:
        raise RuntimeError(f"{path} is not PyPI's vllm {VERSION} wheel (sha256 differs): delete it to download again")
    return path


def is_python_module(name: str) -> bool:
    return name.endswith((".py", "/py.typed")) or ".dist-info/" in name


def python_tree() -> Path:
    """A folder whose `vllm` package is 0.26.0's Python modules: first on a path, `import vllm` is 0.26.0."""
    if (TREE / "vllm" / "__init__.py").exists():
        return TREE
    source = wheel()
    TREE.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=TREE.parent) as tmp, zipfile.ZipFile(source) as zf:
        zf.extractall(tmp, [name for name in zf.namelist() if is_python_module(name)])
        shutil.rmtree(TREE, ignore_errors=True)
        Path(tmp).rename(TREE)  # whole or not at all: a run stopped halfway leaves no tree
        Path(tmp).mkdir()  # for TemporaryDirectory's cleanup
    return TREE
