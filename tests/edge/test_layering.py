"""The edge's modules import each other without cycles, function-local imports
included (a cycle hidden inside a function is still a cycle), and none is over the
size at which it holds two jobs."""

from __future__ import annotations

import ast
from pathlib import Path

import relay.edge

EDGE = Path(relay.edge.__file__).parent
MAX_LINES = 500


def _edge_imports(path: Path) -> set[str]:
    """Edge modules ``path`` imports anywhere in its body (``relay.edge.x`` -> ``x``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
            if node.module == "relay.edge":
                names = [f"relay.edge.{alias.name}" for alias in node.names]
        for name in names:
            if name.startswith("relay.edge."):
                found.add(name.split(".")[2])
    return found


def _graph() -> dict[str, set[str]]:
    modules = {p.stem: p for p in EDGE.glob("*.py") if p.stem != "__init__"}
    return {name: _edge_imports(path) & modules.keys() - {name}
            for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path of module names, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_edge_modules_import_each_other_without_a_cycle() -> None:
    assert _cycle(_graph()) is None, " -> ".join(_cycle(_graph()) or [])


def test_completeness_does_not_reach_back_into_the_spool() -> None:
    assert "spool" not in _edge_imports(EDGE / "completeness.py")


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_edge_module_is_over_the_size_of_one_job() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in EDGE.glob("*.py")}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
