"""The house's layers point one way (api -> protocol -> serving -> engine), and no packages import
each other in a cycle. Read from the source, so a new import that breaks the rule fails here."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("server", "loadtests", "benchmarks")


def imports() -> dict[str, set[str]]:
    """Every module of the project and the project modules it imports (at any depth of its code)."""
    graph: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module:
                    found.add(node.module)
                    found.update(f"{node.module}.{alias.name}" for alias in node.names)
                elif isinstance(node, ast.Import):
                    found.update(alias.name for alias in node.names)
            graph[module] = found
    return graph


def project_imports(graph: dict[str, set[str]], module: str) -> set[str]:
    return {name for name in graph[module] if name in graph}


def unit(module: str) -> str:
    """What the cycle rule compares: a package below server/ as a whole, a top-level module alone."""
    parts = module.split(".")
    if parts[0] != "server":
        return parts[0]
    return ".".join(parts[:2])


def test_serving_imports_nothing_above_it():
    graph = imports()
    above = (
        "server.api",
        "server.records",
        "server.protocol",
        "server.streaming",
        "server.app",
        "server.cli",
        "server.batch",
    )
    for module in (m for m in graph if m.startswith(("server.serving", "server.engine"))):
        wrong = {name for name in project_imports(graph, module) if name.startswith(above)}
        assert not wrong, f"{module} imports {wrong}"


def test_engine_imports_no_other_layer():
    graph = imports()
    for module in (m for m in graph if m.startswith("server.engine")):
        wrong = {
            name
            for name in project_imports(graph, module)
            if name.startswith("server.") and not name.startswith(("server.engine", "server.config"))
        }
        assert not wrong, f"{module} imports {wrong}"


def test_protocols_do_not_reach_into_routes_or_records():
    graph = imports()
    for module in (m for m in graph if m.startswith("server.protocol")):
        wrong = {
            name
            for name in project_imports(graph, module)
            if name.startswith(("server.api", "server.records", "server.app", "server.cli", "server.batch"))
        }
        assert not wrong, f"{module} imports {wrong}"


def test_batch_jobs_sit_below_the_routes_and_their_store_stands_alone():
    # server/batch runs items through protocol and serving as a route does; routes call it, never the reverse.
    graph = imports()
    for module in (m for m in graph if m.startswith("server.batch")):
        wrong = {n for n in project_imports(graph, module) if n.startswith(("server.api", "server.app", "server.cli"))}
        assert not wrong, f"{module} imports {wrong}"
    assert not project_imports(graph, "server.batch.store")


def test_only_the_engine_imports_vllm():
    graph = imports()
    importers = {module for module, names in graph.items() if any(n.split(".")[0] == "vllm" for n in names)}
    assert {m for m in importers if m.startswith("server")} == {
        "server.engine.vllm_engine",
        "server.engine.shared_engine",
        "server.engine.vllm_fixes",
    }
    assert not {m for m in importers if m.startswith("loadtests")}


def test_load_generator_stands_alone():
    graph = imports()
    for module in (m for m in graph if m.startswith("loadtests")):
        assert not {n for n in project_imports(graph, module) if not n.startswith("loadtests")}, module


def test_no_cycle_between_packages():
    graph = imports()
    edges: dict[str, set[str]] = {}
    for module in graph:
        edges.setdefault(unit(module), set()).update(
            unit(name) for name in project_imports(graph, module) if unit(name) != unit(module)
        )

    def reachable(start: str) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for step in edges.get(todo.pop(), ()):
                if step not in seen:
                    seen.add(step)
                    todo.append(step)
        return seen

    assert sorted(node for node in edges if node in reachable(node)) == []
