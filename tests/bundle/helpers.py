"""Building and installing the offline GPU bundle from the tests: the builder loaded as a module, and the
node script run the way a node runs it.

The node runs Python 3.12; this machine's venv is 3.11 with torch 2.13 for the CPU. pip is told to install
for 3.12 through its own environment variables (PIP_PYTHON_VERSION, PIP_PLATFORM), which the node script
honours too."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import bundle_builder

ROOT = Path(__file__).resolve().parents[2]
NODE_SCRIPT = ROOT / "scripts" / "gpu_offline.sh"


gpu_bundle: Any = bundle_builder.gpu_bundle


def node_env(**extra: str) -> dict[str, str]:
    """This machine's environment, with pip installing for the node's Python and platforms."""
    return {
        **os.environ,
        "PIP_PYTHON_VERSION": gpu_bundle.NODE_PYTHON,
        "PIP_PLATFORM": " ".join(gpu_bundle.NODE_PLATFORMS),
        "PIP_ONLY_BINARY": ":all:",
        **extra,
    }


def run_node_script(
    bundle_dir: Path, target: Path, python: str = sys.executable, *args: str
) -> subprocess.CompletedProcess[str]:
    """The node script, installing only (`--no-check`) unless `args` say otherwise."""
    return subprocess.run(
        ["sh", str(bundle_dir / NODE_SCRIPT.name), "--target", str(target), *(args or ("--no-check",))],
        capture_output=True,
        text=True,
        timeout=600,
        env=node_env(PYTHON=python),
    )


@dataclass(frozen=True)
class Bundle:
    dir: Path
    manifest: dict[str, Any]
    build_seconds: float

    def part(self, index: int) -> Path:
        return self.dir / self.manifest["parts"][index]["name"]


@dataclass(frozen=True)
class Install:
    target: Path
    output: str
    seconds: float
