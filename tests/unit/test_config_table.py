"""server/config.py is the one source of wai's settings; the README's configuration tables must list
each of them, nested ones by their dotted key, with the default the settings model gives it.

The tables, in the README's "Configuration" section: the top-level settings, then one table for the
entries of each list of settings (`keys`, `models`), introduced by "Each entry of `<list>`". A default
cell is checked where it states one: `none` (the setting defaults to nothing), `required`, a YAML
literal in backticks, or a size in MiB; any other words say how wai derives the value, which the model
leaves as None."""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from server.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def nested_model(annotation: Any) -> type[BaseModel] | None:
    """The settings model a field holds (itself, or optionally), else None."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [nested_model(arg) for arg in typing.get_args(annotation) if arg is not type(None)]
        return models[0] if len(models) == 1 else None
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def entry_model(annotation: Any) -> type[BaseModel] | None:
    """The settings model of each entry of a list field, else None."""
    if typing.get_origin(annotation) is list:
        return nested_model(typing.get_args(annotation)[0])
    return None


def settings_of(model: type[BaseModel], prefix: str = "") -> dict[str, FieldInfo]:
    """Every setting of `model` by its dotted key; a list of entries is one setting with its own table."""
    found = {}
    for name, field in model.model_fields.items():
        inner = nested_model(field.annotation)
        if inner is not None:
            found.update(settings_of(inner, f"{prefix}{name}."))
        else:
            found[f"{prefix}{name}"] = field
    return found


def tables_of_the_model() -> dict[str, dict[str, FieldInfo]]:
    """The settings each README table must hold: "" for the top level, else the list's name."""
    tables = {"": settings_of(Settings)}
    for name, field in Settings.model_fields.items():
        entry = entry_model(field.annotation)
        if entry is not None:
            tables[name] = settings_of(entry)
    return tables


def split_cell(cell: str) -> list[str]:
    """A cell's comma-separated parts, commas inside backticks kept."""
    return [part.strip() for part in re.split(r",(?=(?:[^`]*`[^`]*`)*[^`]*$)", cell)]


def readme_tables(text: str) -> dict[str, dict[str, str]]:
    """Each configuration table of the README: its settings, each with its default cell."""
    section = text.split("\n## Configuration", 1)[1].split("\n## ", 1)[0]
    tables: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    owner = ""
    for line in section.splitlines():
        if not line.startswith("|"):
            current = None
            if line.strip():
                found = re.search(r"Each entry of `(\w+)`", line)
                owner = found.group(1) if found else owner
            continue
        if current is None:
            assert owner not in tables, f"two tables for {owner or 'the top level'}"
            current = tables[owner] = {}
            continue  # the header
        names_cell, default_cell = (cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:3])
        if set(names_cell) <= {"-", " "}:
            continue  # the header's rule
        names = re.findall(r"`([^`]+)`", names_cell)
        defaults = split_cell(default_cell)
        for index, name in enumerate(names):
            assert name not in current, f"{name} is in the table twice"
            current[name] = defaults[index] if len(defaults) == len(names) else default_cell
    return tables


def stated_default_is_true(stated: str, field: FieldInfo) -> bool:
    if stated == "required":
        return field.is_required()
    if field.is_required():
        return False
    default = field.get_default(call_default_factory=True)
    if stated == "none":
        return default is None or default == [] or default == {}
    if re.fullmatch(r"`[^`<]*`", stated):
        value = yaml.safe_load(stated.strip("`"))
        if isinstance(default, Path):
            return Path(str(value)).expanduser() == default.expanduser()
        return bool(value == default)
    size = re.fullmatch(r"(\d+) MiB", stated)
    if size:
        return int(size.group(1)) * 1024 * 1024 == default
    return default is None  # words: a value wai derives from others, as they say


@pytest.fixture
def model_defaults(monkeypatch):
    monkeypatch.delenv("WAI_CACHE_DIR", raising=False)  # cache_dir's default reads it


def check(text: str) -> list[str]:
    """What is wrong between the README's tables in `text` and the settings model."""
    wrong = []
    documented = readme_tables(text)
    for table, settings in tables_of_the_model().items():
        rows = documented.get(table, {})
        where = f"the table of {table or 'top-level settings'}"
        wrong += [f"{key}: not in {where}" for key in settings.keys() - rows.keys()]
        wrong += [f"{key}: in {where}, but no such setting" for key in rows.keys() - settings.keys()]
        wrong += [
            f"{key}: {where} says {rows[key]!r}"
            for key in settings.keys() & rows.keys()
            if not stated_default_is_true(rows[key], settings[key])
        ]
    wrong += [
        f"a table for {table}, which is no list of settings"
        for table in documented.keys() - tables_of_the_model().keys()
    ]
    return sorted(wrong)


def test_every_setting_is_in_the_readme_tables_with_its_default_and_nothing_else(model_defaults):
    assert check(README.read_text()) == []


def test_the_check_finds_a_missing_row_a_wrong_default_and_a_setting_that_does_not_exist(model_defaults):
    text = README.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `streaming.padding_max_chars` |"))
    assert check(text.replace(row + "\n", "")) == [
        "streaming.padding_max_chars: not in the table of top-level settings"
    ]
    wrong_default = row.replace("| `32` |", "| `33` |")
    assert check(text.replace(row, wrong_default)) == [
        "streaming.padding_max_chars: the table of top-level settings says '`33`'"
    ]
    assert check(text.replace(row, row.replace("padding_max_chars", "padding_most_chars"))) == [
        "streaming.padding_max_chars: not in the table of top-level settings",
        "streaming.padding_most_chars: in the table of top-level settings, but no such setting",
    ]
