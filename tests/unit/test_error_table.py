"""server/errors.py is the one source of wai's errors; the README's tables must list each of them, as the
Workers AI routes answer them and as the OpenAI routes do."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from server import errors
from server.protocol import openai_answers

README = Path(__file__).resolve().parents[2] / "README.md"
PLACEHOLDERS: dict[object, object] = {str: "x", int: 1, tuple[str | int, ...]: ("body",)}


def made_errors() -> list[tuple[str, errors.WaiError]]:
    """Every error server/errors.py can make, by its factory's name, each factory called once."""
    made = []
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
        made.append((name, factory(**args)))
    return made


def error_table() -> set[tuple[int, int]]:
    """(status, code) of every error server/errors.py can make."""
    return {(error.status, error.code) for _, error in made_errors()}


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


# Errors that never reach the OpenAI paths: the fine-tune management API, JSON mode (whose content the
# /v1 routes return as a string) and the batch API.
NOT_ON_OPENAI_PATHS = {
    "finetune_not_found",
    "invalid_finetune",
    "finetune_name_taken",
    "finetune_file_too_large",
    "json_mode_failed",
    "batch_too_many_items",
    "batch_too_large",
    "batch_not_found",
    "batch_jobs_full",
    # The gateways and logs APIs live under /client/v4 only; a gateway's own refusals (its rate limit,
    # its authorization) answer in its AiGatewayError shape on every path (protocol/gateway.py).
    "gateway_input_invalid",
    "gateway_exists",
    "gateway_read_only",
    "gateway_rate_limited",
    "gateway_unauthorized",
}


def openai_error_table() -> set[tuple[int, str, str]]:
    """(status, type, code) of every error the /v1 routes can answer, as protocol/openai.py renders it."""
    made = {
        (openai_answers.error_status(error), body["type"], body["code"])
        for name, error in made_errors()
        if name not in NOT_ON_OPENAI_PATHS
        for body in [openai_answers.error_body(error)["error"]]
    }
    for code in (errors.MISSING_PARAMETER, errors.WRONG_TYPE):  # bad_input as protocol/openai.py's parse makes it
        made.add((400, "invalid_request_error", code))
    return made


def readme_openai_table() -> set[tuple[int, str, str]]:
    section = README.read_text().split("## Errors", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| [^|]+ \| (\d{3}) \| `([a-z_]+)` \| `([a-z_0-9]+)` \|$", section, flags=re.MULTILINE)
    return {(int(status), kind, code) for status, kind, code in rows}


def test_every_openai_error_is_in_the_readme_openai_table_and_nothing_else():
    assert readme_openai_table() == openai_error_table()


def test_the_errors_kept_off_the_openai_paths_are_errors():
    assert NOT_ON_OPENAI_PATHS <= {name for name, _ in made_errors()}
