"""The vLLM releases wai runs on, from 0.26.0 (built on torch 2.11) to 0.32.x (the pin).

The standard library only, so that the GPU check's preflight reads the range on a node before any
of wai's dependencies are there (scripts/gpu_check_steps.py loads this file by its path).
"""

from __future__ import annotations

import re

OLDEST = (0, 26)
NEWEST = (0, 32)
OLDEST_VERSION = "0.26.0"
SUPPORTED = "vLLM 0.26.0 through 0.32.x"


def supports(version: str) -> bool:
    """Whether a vLLM version string (`0.26.0`, `0.32.0+cpu`) is in the range."""
    found = re.match(r"(\d+)\.(\d+)", version)
    return found is not None and OLDEST <= (int(found[1]), int(found[2])) <= NEWEST
