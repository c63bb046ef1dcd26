"""Paths and model names of this repository that tests rely on."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"  # server logs and screenshots, kept for a failed run
DEFAULT_CONFIG = ROOT / "configs" / "default.yaml"
STAND_IN = "@cf/meta/llama-3-8b-instruct"  # the hosted name the default model answers under
REAL_MODEL = "@cf/huggingfacetb/smollm2-135m-instruct"  # the default config's text model
