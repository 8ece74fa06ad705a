"""The layering the design rests on, checked on the source: the plan is the only contract
between compiler and runtime, and no module imports itself back through a cycle.

Every import counts, module-level or inside a function (only ``if TYPE_CHECKING:`` blocks are
skipped: they never run). Layers (docs/architecture.md, "Layers"):

* the base modules ``picompile.errors`` and ``picompile.atomic_files`` import nothing of
  picompile (every layer may use them);
* ``picompile.plan.*`` imports only the base modules and itself;
* ``picompile.runtime.*`` imports only ``picompile.plan``, ``picompile.errors`` and itself, and
  never reads the compiler's annotations (``Step.meta``, ``Plan.analysis``, ``Plan.security``);
* the compiler (everything else but the application modules) reaches the runtime only through
  ``picompile.runtime.interface``;
* the application modules (``picompile`` itself, the CLI) may import anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIRS = {"picompile": ROOT / "picompile", "picompile.passes": ROOT / "passes",
                "picompile.runtime": ROOT / "runtime"}
APPLICATION = {"picompile", "picompile.cli"}
RUNTIME_INTERFACE = "picompile.runtime.interface"
COMPILER_ANNOTATIONS = {"meta", "analysis", "security"}


def source_modules() -> dict[str, Path]:
    """Module name → file, for every module of the installed packages."""
    modules = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join([package, *parts])
            if name.startswith("picompile.passes") and package == "picompile" \
                    or name.startswith("picompile.runtime") and package == "picompile":
                continue  # not reachable: passes/ and runtime/ are mapped packages
            modules[name] = path
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_modules(name: str, tree: ast.AST, known: set[str], is_package: bool) -> set[str]:
    """picompile modules that the module ``name`` imports anywhere in its body."""
    found: set[str] = set()

    def resolve(target: str) -> None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target:
            found.add(target)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                resolve(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                resolve(candidate if candidate in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(name)
    return found


def import_graph() -> nx.DiGraph:
    modules = source_modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        for target in imported_modules(name, tree, set(modules), path.name == "__init__.py"):
            graph.add_edge(name, target)
    return graph


def layer(module: str) -> str:
    if module in ("picompile.errors", "picompile.atomic_files"):
        return "errors"
    if module == "picompile.plan" or module.startswith("picompile.plan."):
        return "plan"
    if module == "picompile.runtime" or module.startswith("picompile.runtime."):
        return "runtime"
    if module in APPLICATION:
        return "application"
    return "compiler"


ALLOWED = {
    "errors": {"errors"},
    "plan": {"errors", "plan"},
    "runtime": {"errors", "plan", "runtime"},
    "compiler": {"errors", "plan", "compiler"},
    "application": {"errors", "plan", "runtime", "compiler", "application"},
}


def violations(graph: nx.DiGraph) -> list[str]:
    """Every import that crosses the layering, as 'a -> b'."""
    found = []
    for source, target in graph.edges:
        if layer(target) in ALLOWED[layer(source)]:
            continue
        if layer(source) == "compiler" and target == RUNTIME_INTERFACE:
            continue
        found.append(f"{source} -> {target}")
    return sorted(found)


def test_layering_holds():
    graph = import_graph()
    assert len(graph) > 40 and RUNTIME_INTERFACE in graph
    assert violations(graph) == []


def test_no_import_cycles():
    graph = import_graph()
    cycles = [c for c in nx.simple_cycles(graph)]
    assert cycles == [], f"import cycles: {cycles[:3]}"


def test_runtime_never_reads_compiler_annotations():
    modules = source_modules()
    reads = []
    for name, path in modules.items():
        if layer(name) != "runtime":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in COMPILER_ANNOTATIONS:
                reads.append(f"{name}:{node.lineno} .{node.attr}")
    assert reads == []


@pytest.mark.parametrize("source, target, allowed", [
    ("picompile.runtime.ckks", "picompile.passes.levels", False),
    ("picompile.runtime.ckks", "picompile.cost", False),
    ("picompile.plan.document", "picompile.runtime", False),
    ("picompile.passes.layout", "picompile.runtime.plain", False),
    ("picompile.passes.layout", RUNTIME_INTERFACE, True),
    ("picompile.cli", "picompile.runtime.hybrid", True),
])
def test_the_checker_flags_crossings(source, target, allowed):
    graph = nx.DiGraph([(source, target)])
    assert (violations(graph) == []) is allowed


def test_the_walker_sees_function_level_and_relative_imports():
    tree = ast.parse("def f():\n    from picompile.passes import levels\n"
                     "from .backend import Backend\n"
                     "from typing import TYPE_CHECKING\n"
                     "if TYPE_CHECKING:\n    import picompile.cost\n")
    known = {"picompile.passes", "picompile.passes.levels", "picompile.runtime.backend",
             "picompile.runtime.ckks", "picompile.cost"}
    assert imported_modules("picompile.runtime.ckks", tree, known, False) == {
        "picompile.passes.levels", "picompile.runtime.backend"}
