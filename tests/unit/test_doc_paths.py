"""Every path of the project that the README and docs/ name exists: a module moved or renamed without
its documentation fails here."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP_FOLDERS = ("server", "loadtests", "benchmarks", "scripts", "tests", "configs", "docker", "deploy", "docs")
# A project path: one of the top folders at the start of a word (not inside a URL or another path),
# then path characters; `*` is a glob, `::name` a pytest node after a test file.
PATH = re.compile(rf"(?<![\w/.~<>-])((?:{'|'.join(TOP_FOLDERS)})/[\w./*-]*)")


def named_paths(text: str) -> set[str]:
    return {found.rstrip(".,:;-") for found in PATH.findall(text)}


def exists(path: str) -> bool:
    return any(ROOT.glob(path)) if "*" in path else (ROOT / path).exists()


def test_every_project_path_in_the_docs_exists():
    missing = [
        f"{document.relative_to(ROOT)}: {path}"
        for document in DOCUMENTS
        for path in sorted(named_paths(document.read_text()))
        if not exists(path)
    ]
    assert missing == []


def test_the_paths_found_are_the_ones_written():
    text = "see `server/api/pipeline.py`, tests/unit/test_plan.py::test_x and configs/llama-3-8b-instruct*.yaml."
    assert named_paths(text) == {
        "server/api/pipeline.py",
        "tests/unit/test_plan.py",
        "configs/llama-3-8b-instruct*.yaml",
    }
    assert named_paths("https://example.com/docs/x and ~/.cache/wai/models/server/y") == set()
    assert not exists("server/no_such_module.py")
