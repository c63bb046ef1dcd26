"""The house's layers point one way (api -> protocol -> serving -> engine), no two modules import each
other in a circle, and no module takes another's private names. Read from the source, so a new import
that breaks a rule fails here. Imports count at any depth, inside functions and `if TYPE_CHECKING:` too:
an import hidden there still ties the two modules together, so a circle cannot hide behind it."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("server", "loadtests", "benchmarks", "scripts")


@dataclass
class Module:
    """One source file as the import rules see it."""

    path: Path
    names: set[str] = field(default_factory=set)  # every dotted name it imports, the project's or not
    edges: set[str] = field(default_factory=set)  # the project modules it imports
    private: set[str] = field(default_factory=set)  # "module._name": a private name it takes from another


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def read_modules(root: Path, folders: tuple[str, ...] = PACKAGES) -> dict[str, Module]:
    """Every module under `folders` of `root`, with what it imports at any depth of its code."""
    modules: dict[str, Module] = {}
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            name = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
            modules[name] = Module(path)
    for name, module in modules.items():
        read_imports(name, module, modules)
    return modules


def read_imports(name: str, module: Module, modules: dict[str, Module]) -> None:
    is_package = module.path.name == "__init__.py"
    package = name.split(".") if is_package else name.split(".")[:-1]
    # A folder without __init__.py holds scripts: run as files, they import their siblings by bare name.
    scripts = "" if (module.path.parent / "__init__.py").exists() else ".".join(package)

    def project(imported: str) -> str:
        if scripts and f"{scripts}.{imported.split('.')[0]}" in modules:
            return f"{scripts}.{imported}"
        return imported

    def nearest_module(dotted: str) -> str | None:
        parts = dotted.split(".")
        while parts and ".".join(parts) not in modules:
            parts.pop()
        return ".".join(parts) or None

    modules_bound: dict[str, str] = {}  # local names that stand for a project module
    tree = ast.parse(module.path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            source = project(".".join([*base, *([node.module] if node.module else [])]))
            module.names.add(source)
            for alias in node.names:
                full = f"{source}.{alias.name}"
                module.names.add(full)
                if full in modules:
                    module.edges.add(full)
                    modules_bound[alias.asname or alias.name] = full
                elif source in modules:
                    module.edges.add(source)
                    if is_private(alias.name):
                        module.private.add(full)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                imported = project(alias.name)
                module.names.add(imported)
                target = nearest_module(imported)
                if target:
                    module.edges.add(target)
                    if target == imported and (alias.asname or "." not in alias.name):
                        modules_bound[alias.asname or alias.name] = target
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and is_private(node.attr):
            if node.value.id in modules_bound:
                module.private.add(f"{modules_bound[node.value.id]}.{node.attr}")
    module.edges.discard(name)


def circles(modules: dict[str, Module]) -> list[list[str]]:
    """Each set of modules that import one another round a circle (strongly connected, Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for step in sorted(modules[node].edges):
            if step not in index:
                visit(step)
                low[node] = min(low[node], low[step])
            elif step in stack:
                low[node] = min(low[node], index[step])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(modules):
        if node not in index:
            visit(node)
    return sorted(found)


def private_imports(modules: dict[str, Module]) -> list[str]:
    return sorted(f"{name} takes {taken}" for name, module in modules.items() for taken in module.private)


def imports() -> dict[str, set[str]]:
    """Every module of the project and the dotted names it imports (at any depth of its code)."""
    return {name: module.names for name, module in read_modules(ROOT).items()}


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
    # The SQLite store stands alone but for its records, which are the shared database's store's.
    assert project_imports(graph, "server.batch.store") == {"server.stores.batch"}


def test_the_shared_stores_sit_below_serving():
    # server/stores is below serving and batch: it knows the settings, the errors and the metrics only.
    graph = imports()
    below = ("server.stores", "server.config", "server.errors", "server.metrics")
    for module in (m for m in graph if m.startswith("server.stores")):
        wrong = {n for n in project_imports(graph, module) if n != "server" and not n.startswith(below)}
        assert not wrong, f"{module} imports {wrong}"


def test_only_the_engine_imports_vllm():
    graph = imports()
    importers = {module for module, names in graph.items() if any(n.split(".")[0] == "vllm" for n in names)}
    assert {m for m in importers if m.startswith("server")} == {
        "server.engine.engine_args",
        "server.engine.vllm_engine",
        "server.engine.shared_engine",
        "server.engine.vllm_fixes",
        "server.engine.vllm_compat",
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


def test_no_circle_between_modules():
    assert circles(read_modules(ROOT)) == []


def test_no_private_name_crosses_modules():
    assert private_imports(read_modules(ROOT)) == []


def write(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)


def test_the_checker_finds_a_planted_circle_even_when_hidden(tmp_path: Path):
    # a -> b at the top, b -> a inside a function and c -> a under TYPE_CHECKING with a -> c: two circles
    # that only hidden imports close; d imports a one way and is in none.
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg import b\nfrom pkg.c import thing\n",
            "pkg/b.py": "def late():\n    from pkg.a import x\n    return x\n",
            "pkg/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\nthing = 1\n",
            "pkg/d.py": "import pkg.a\n",
            "tools/run.py": "import helper\n",
            "tools/helper.py": "from run import main\n",
        },
    )
    assert circles(read_modules(tmp_path, ("pkg", "tools"))) == [
        ["pkg.a", "pkg.b", "pkg.c"],
        ["tools.helper", "tools.run"],
    ]


def test_the_checker_finds_a_planted_private_import(tmp_path: Path):
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "_secret = 1\n__version__ = '1'\n",
            "pkg/b.py": "from pkg.a import _secret, __version__\n",
            "pkg/c.py": "from pkg import a\nprint(a._secret)\n",
            "pkg/d.py": "from os import _exit\nfrom pkg.a import __version__\n",
        },
    )
    assert private_imports(read_modules(tmp_path, ("pkg",))) == [
        "pkg.b takes pkg.a._secret",
        "pkg.c takes pkg.a._secret",
    ]
