"""The import graph of ``src/dermbench`` points one way (docs/ARCHITECTURE.md, issue 12).

The graph is read from the source with :mod:`ast`, not by importing: every ``import`` and
``from ... import`` counts, at module level, inside functions and under ``TYPE_CHECKING``. A
function-level import is a dependency all the same (it only moves the cost of importing), so the
rules below hold for it too; this is the strict reading, and it is what makes ``data/card`` ->
``data/contract`` (imported inside a function) and ``data/contract`` -> ``data/card`` a cycle.
Imports of plugin targets by string (``"package.module:attribute"``) are not edges.

Rules:
- ``models/`` imports neither ``paradigms/`` nor ``runner/``; ``paradigms/`` does not import
  ``runner/``; ``data/`` imports none of ``models/``, ``paradigms/``, ``runner/``;
- no cycle between subpackages (``dermbench.<name>``), and no cycle between modules.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest

import dermbench

PACKAGE_DIR = Path(dermbench.__file__).resolve().parent
ROOT = "dermbench"

FORBIDDEN = {
    "models": {"paradigms", "runner"},
    "paradigms": {"runner"},
    "data": {"models", "paradigms", "runner"},
}

def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@lru_cache(maxsize=1)
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _is_package(module: str) -> bool:
    return _modules()[module].name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    """The dermbench modules an import statement in ``module`` reads (others are dropped)."""
    known = _modules()
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            package = module if _is_package(module) else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{node.module}" if node.module else package
        else:
            base = node.module or ""
        # `from pkg import sub` reads the submodule when there is one, else an attribute of pkg
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
    found = []
    for name in names:
        while name and name not in known:  # `import dermbench.data.contract.x` -> longest known prefix
            name = name.rpartition(".")[0]
        if name.split(".")[0] == ROOT and name != module:
            found.append(name)
    return found


@lru_cache(maxsize=1)
def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported module: line of the first such import}."""
    graph: dict[str, dict[str, int]] = {}
    for module, path in _modules().items():
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _resolve(module, node):
                    edges.setdefault(target, node.lineno)
        graph[module] = edges
    return graph


def subpackage(module: str) -> str:
    """``dermbench.data.contract`` -> ``data``; the package itself -> ``dermbench``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def _where(source: str, target: str) -> str:
    return f"{_modules()[source].relative_to(PACKAGE_DIR)}:{import_graph()[source][target]} imports {target}"


# --- the graph reader itself ---------------------------------------------------------------------
def test_graph_reader_resolves_relative_and_function_level_imports() -> None:
    graph = import_graph()
    assert len(graph) > 50 and "dermbench.cli.main" in graph
    # module level, relative, two dots
    assert "dermbench.errors" in graph["dermbench.cli.main"]
    # `from . import images as imgio` in a module reads the sibling module
    assert "dermbench.data.images" in graph["dermbench.data.contract"]
    # function level: the report's error pages load datasets inside a function
    assert "dermbench.data.contract" in graph["dermbench.report.error_pages"]


def test_cycle_finder_finds_cycles_and_only_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set(), "c": {"b"}}) == []


# --- the rules -----------------------------------------------------------------------------------
@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_does_not_import_the_layers_above_it(layer: str) -> None:
    graph = import_graph()
    offences = [_where(source, target) for source, targets in graph.items() if subpackage(source) == layer
                for target in targets if subpackage(target) in FORBIDDEN[layer]]
    assert not offences, f"{layer}/ must not import {sorted(FORBIDDEN[layer])}:\n  " + "\n  ".join(offences)


def test_no_cycle_between_subpackages() -> None:
    graph = import_graph()
    packages: dict[str, set[str]] = {}
    for source, targets in graph.items():
        packages.setdefault(subpackage(source), set()).update(
            subpackage(t) for t in targets if subpackage(t) != subpackage(source))
    cycles = _cycles(packages)
    detail = []
    for cycle in cycles:
        members = set(cycle)
        detail += [_where(s, t) for s, targets in graph.items() for t in targets
                   if subpackage(s) in members and subpackage(t) in members and subpackage(s) != subpackage(t)]
    assert not cycles, f"cycles between subpackages {cycles}:\n  " + "\n  ".join(detail)


def test_no_cycle_between_modules() -> None:
    graph = import_graph()
    cycles = _cycles({source: set(targets) for source, targets in graph.items()})
    detail = [_where(s, t) for cycle in cycles for s in cycle for t in graph[s] if t in cycle]
    assert not cycles, f"import cycles between modules {cycles}:\n  " + "\n  ".join(detail)
