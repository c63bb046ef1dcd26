"""server/errors.py is the one source of wai's errors; the README's table must list each of them."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from server import errors

README = Path(__file__).resolve().parents[2] / "README.md"
PLACEHOLDERS = {str: "x", int: 1}


def error_table() -> set[tuple[int, int]]:
    """(status, code) of every error server/errors.py can make, each factory called once."""
    made = set()
    for name, factory in vars(errors).items():
        if not inspect.isfunction(factory) or factory.__module__ != errors.__name__ or name.startswith("_"):
            continue
        hints = inspect.get_annotations(factory, eval_str=True)
        assert hints.pop("return") is errors.WaiError, f"{name} makes something other than an error"
        args = {
            param: PLACEHOLDERS[kind]
            for param, kind in hints.items()
            if inspect.signature(factory).parameters[param].default is inspect.Parameter.empty
        }
        error = factory(**args)
        made.add((error.status, error.code))
    return made


def readme_table() -> set[tuple[int, int]]:
    section = README.read_text().split("## Errors", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| [^|]+ \| (\d{3})[^|]* \| (\d+)[^|]* \|$", section, flags=re.MULTILINE)
    return {(int(status), int(code)) for status, code in rows}


def test_every_error_is_in_the_readme_table_and_nothing_else():
    assert readme_table() == error_table()


def test_no_error_is_made_outside_the_table():
    server = Path(errors.__file__).parent
    makers = [
        path.relative_to(server).as_posix()
        for path in server.rglob("*.py")
        if "WaiError(" in path.read_text() and path.name != "errors.py"
    ]
    assert makers == []
