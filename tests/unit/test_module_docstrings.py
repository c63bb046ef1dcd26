"""Every module says in the first line of its docstring what it holds. The README's Layout points
there instead of listing the modules by hand, and lists them with a grep for that line."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("server", "loadtests", "benchmarks", "scripts")


def modules() -> list[Path]:
    return sorted(path for folder in FOLDERS for path in (ROOT / folder).rglob("*.py"))


def summary(source: str) -> str | None:
    """The module docstring's first line, where it is a whole sentence of a few words; else None."""
    docstring = ast.get_docstring(ast.parse(source))
    if not docstring:
        return None
    first = docstring.splitlines()[0].strip()
    return first if first.endswith(".") and len(first.split()) >= 4 else None


def listed_line(source: str) -> str | None:
    """What the README's `grep -m1 '\"\"\"'` shows for a module: its first line holding three quotes."""
    return next((line for line in source.splitlines() if '"""' in line), None)


def test_every_module_says_in_its_first_docstring_line_what_it_holds():
    lacking = [path.relative_to(ROOT).as_posix() for path in modules() if summary(path.read_text()) is None]
    assert lacking == []


def test_the_readme_listing_shows_each_modules_summary():
    for path in modules():
        source = path.read_text()
        assert listed_line(source) in {f'"""{summary(source)}', f'"""{summary(source)}"""'}, path


def test_the_checks_refuse_a_module_without_a_summary():
    assert summary("import os\n") is None
    assert summary('"""Holds."""\n') is None
    assert (
        summary('"""Tool calls for every protocol: the tools a request offers, what the model is\ntold."""\n') is None
    )
    assert summary('# a comment\n"""The engine layer: the interface as plain data."""\n') == (
        "The engine layer: the interface as plain data."
    )
