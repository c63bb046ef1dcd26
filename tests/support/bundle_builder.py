"""scripts/gpu_bundle.py loaded as a module: the bundle's builder, its lock and its hashing, for tests."""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

from tests.support.repo import ROOT


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("gpu_bundle", ROOT / "scripts" / "gpu_bundle.py")
    assert spec and spec.loader
    module = sys.modules["gpu_bundle"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_bundle: Any = sys.modules.get("gpu_bundle") or _load()
