"""The offline GPU bundle, built once per session (`scripts/gpu_bundle.py`, its downloads and slim wheel kept in
its cache folder, so a rerun takes seconds) and installed once with `scripts/gpu_offline.sh` as a node would."""

from __future__ import annotations

import json
import time

import pytest

from tests.bundle.helpers import Bundle, Install, gpu_bundle, run_node_script


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    out = tmp_path_factory.mktemp("gpu-bundle")
    started = time.monotonic()
    manifest = gpu_bundle.build_bundle(out)
    return Bundle(out, json.loads(manifest.read_text()), time.monotonic() - started)


@pytest.fixture(scope="session")
def installed(bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Install:
    target = tmp_path_factory.mktemp("node") / "install"
    started = time.monotonic()
    result = run_node_script(bundle.dir, target)
    assert result.returncode == 0, result.stdout + result.stderr
    return Install(target, result.stdout, time.monotonic() - started)
