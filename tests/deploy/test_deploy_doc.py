"""docs/deploy.md and `wai plan` agree: the capacity table between the `wai-plan-table` marks is what
`wai plan --json` prints for every GPU config in configs/ on each GPU the doc quotes, and every figure
marked `<!-- plan CONFIG GPU KEY -->` in the prose equals the plan's. After changing a config or
server/plan/, regenerate the table:

    .venv/bin/python -m tests.deploy.test_deploy_doc --write
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "deploy.md"
GPUS = ["H100", "H200"]  # the GPUs the doc quotes, each with its data sheet in server/plan/data.py
BEGIN = "<!-- wai-plan-table: generated from `wai plan --json`; python -m tests.deploy.test_deploy_doc --write -->"
END = "<!-- /wai-plan-table -->"


def gpu_configs() -> list[str]:
    """Configs whose KV cache vLLM sizes from GPU memory (no fixed kv_cache_gib): the GPU configs."""
    names = []
    for path in sorted((ROOT / "configs").glob("*.yaml"), key=lambda p: p.stem):
        models = yaml.safe_load(path.read_text())["models"]
        text = [m for m in models if m.get("task", "text-generation") == "text-generation"]
        if text and all("kv_cache_gib" not in (m.get("engine") or {}) for m in text):
            names.append(path.stem)
    return names


@cache
def plan(config: str, gpu: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "server.cli", "plan", "--config", f"configs/{config}.yaml", "--gpu", gpu, "--json"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"wai plan {config} {gpu}: {result.stderr}"
    return json.loads(result.stdout)["models"][0]


def whole(v: Any) -> str:
    return f"{round(v):,}"


def published(v: list[dict[str, Any]]) -> str:
    return ", ".join(whole(p["output_tokens_per_s"]) for p in v) or "none in the table"


# The figures the doc quotes: key in the plan's JSON (dots go into "estimate"), column header, format.
FIGURES: dict[str, tuple[str, Callable[[Any], str]]] = {
    "gpus": ("GPUs", str),
    "weights_gib": ("weights GiB", lambda v: f"{v:.2f}"),
    "kv_bytes_per_token": ("KV per token KiB", lambda v: f"{v / 1024:g}"),
    "kv_cache_gib": ("KV cache GiB", lambda v: f"{v:.2f}"),
    "kv_cache_tokens": ("tokens that fit", whole),
    "kv_concurrency": ("sequences the cache holds", whole),
    "concurrency": ("concurrency (max_num_seqs caps)", whole),
    "estimate.decode_tokens_per_s_batch1": ("decode, 1 sequence, tok/s (estimate)", whole),
    "estimate.decode_tokens_per_s_aggregate": ("decode in all at that concurrency, tok/s (estimate)", whole),
    "published": ("published tok/s", published),
}


def figure(config: str, gpu: str, key: str) -> str:
    value: Any = plan(config, gpu)
    for part in key.split("."):
        value = value[part]
    return FIGURES[key][1](value)


def table() -> str:
    header = ["config", "GPU", *(h for h, _ in FIGURES.values())]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for config in gpu_configs():
        for gpu in GPUS:
            lines.append("| " + " | ".join([f"`{config}`", gpu, *(figure(config, gpu, k) for k in FIGURES)]) + " |")
    return "\n".join(lines)


def table_in(doc: str) -> str:
    assert doc.count(BEGIN) == 1 and doc.count(END) == 1, "docs/deploy.md lost its wai-plan-table marks"
    return doc.split(BEGIN)[1].split(END)[0].strip()


MARK = re.compile(r"([\d][\d,.]*)<!-- plan (\S+) (\S+) (\S+) -->")


def disagreements(doc: str) -> list[str]:
    """Every place where the doc says something other than `wai plan`."""
    problems = []
    if table_in(doc) != table():
        problems.append("the capacity table differs from `wai plan` (regenerate it: see this module's docstring)")
    for quoted, config, gpu, key in MARK.findall(doc):
        expected = figure(config, gpu, key)
        if quoted != expected:
            problems.append(f"{config} on {gpu}, {key}: the doc says {quoted}, `wai plan` says {expected}")
    return problems


def test_deploy_doc_agrees_with_wai_plan() -> None:
    doc = DOC.read_text()
    assert len(MARK.findall(doc)) >= 5, "the prose quotes fewer plan figures than it used to"
    assert disagreements(doc) == []


def test_every_gpu_config_is_in_the_table() -> None:
    configs = gpu_configs()
    assert {"llama-3-8b-instruct", "llama-3-8b-instruct-fp8", "llama-3-8b-instruct-tp2"} <= set(configs)
    rows = table_in(DOC.read_text())
    for config in configs:
        for gpu in GPUS:
            assert f"| `{config}` | {gpu} |" in rows


def test_a_wrong_figure_is_caught() -> None:
    doc = DOC.read_text()
    quoted, config, gpu, key = MARK.findall(doc)[0]
    wrong = doc.replace(f"{quoted}<!-- plan {config} {gpu} {key} -->", f"9{quoted}<!-- plan {config} {gpu} {key} -->")
    assert any(f"the doc says 9{quoted}" in p for p in disagreements(wrong))
    row = table().splitlines()[2]
    cells = row.split(" | ")
    cells[5] = "1"  # a KV cache of 1 GiB
    edited = doc.replace(row, " | ".join(cells))
    assert edited != doc and any("capacity table" in p for p in disagreements(edited))


def write() -> None:
    doc = DOC.read_text()
    DOC.write_text(doc.replace(table_in(doc), table()))


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write()
    else:
        print(table())
