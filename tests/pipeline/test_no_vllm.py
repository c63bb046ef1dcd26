"""The fast tier never needs vLLM: the app, the CLI and the fakes import and serve without it.

Checked in fresh interpreters: in this one, another tier's tests may have imported vLLM already.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SERVE_ON_THE_FAKES = """
import sys
from pathlib import Path
from tests.support.fakes import TEXT_MODEL, fake_settings
from tests.support.servers import serve_app
with serve_app(fake_settings(Path(sys.argv[1]))) as served, served.client() as client:
    assert client.post("/v1/completions", json={"model": TEXT_MODEL, "prompt": "Hi"}).status_code == 200
    assert client.post("/v1/embeddings", json={"model": "@cf/test/embed", "input": "Hi"}).status_code == 200
assert "vllm" not in sys.modules, "serving on the fakes imported vllm"
"""


def python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_the_app_the_cli_and_the_fakes_do_not_import_vllm():
    completed = python(
        "-c", "import server.app, server.cli, tests.support.servers; import sys; assert 'vllm' not in sys.modules"
    )
    assert completed.returncode == 0, completed.stderr


def test_serving_on_the_fakes_does_not_import_vllm(tmp_path):
    completed = python("-c", SERVE_ON_THE_FAKES, str(tmp_path))
    assert completed.returncode == 0, completed.stderr
