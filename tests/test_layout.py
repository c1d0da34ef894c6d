"""The layout rules of DESIGN.md section 6 that a machine can check.

No import cycle between the files of app/, counting every import: at module level, inside
a function, under `if TYPE_CHECKING:`. An import inside a function hides a cycle from
Python at start-up, not from the reader: the two files still cannot be understood, changed
or tested apart. And app/errors.py, which the whole app imports, imports nothing of it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app"

Graph = Mapping[str, Iterable[str]]

# Cycles that run through files being rewritten elsewhere, each as the set of its files.
# An entry must match a cycle's files exactly, so a new file joining it fails the test.
ALLOWED_CYCLES: list[frozenset[str]] = []


def _module_file(dotted: str) -> Path | None:
    """app/x/y.py or app/x/y/__init__.py for "app.x.y", if either exists."""
    base = ROOT.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_of(path: Path) -> str:
    """The dotted package a file's relative imports start from: its folder's."""
    return ".".join(path.relative_to(ROOT).parts[:-1])


def _imported_modules(path: Path, tree: ast.AST) -> Iterator[str]:
    """Every module of `app` that `tree` imports, anywhere in the file."""
    for module in _every_import(path, tree):
        if module == "app" or module.startswith("app."):
            yield module


def _every_import(path: Path, tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package_of(path).split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            for alias in node.names:
                # `from app.x import y`: the file app/x/y.py when y is a module of its own.
                submodule = f"{module}.{alias.name}"
                yield submodule if _module_file(submodule) is not None else module


def _targets(dotted: str) -> Iterator[Path]:
    """The files that importing `dotted` runs: each package's __init__ on the way, then it."""
    parts = dotted.split(".")
    if parts[0] != "app":
        return
    for end in range(1, len(parts) + 1):
        found = _module_file(".".join(parts[:end]))
        if found is not None:
            yield found


def import_graph(app: Path = APP) -> dict[str, set[str]]:
    """File -> the files of app/ it imports, as paths relative to the repository."""
    graph: dict[str, set[str]] = {}
    for path in sorted(app.rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        edges = graph.setdefault(name, set())
        tree = ast.parse(path.read_text(), filename=str(path))
        for module in _imported_modules(path, tree):
            for target in _targets(module):
                if target != path:
                    edges.add(target.relative_to(ROOT).as_posix())
    return graph


def strongly_connected(graph: Graph) -> list[list[str]]:
    """The graph's strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def shortest_cycle(graph: Graph, start: str, members: Iterable[str]) -> list[str]:
    """A shortest cycle from `start` back to it inside one component, both ends included."""
    inside = set(members)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph.get(node, ())):
                if nxt == start:
                    return [*paths[node], start]
                if nxt in inside and nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"{start} is on no cycle inside {sorted(inside)}")


def cycles_of(graph: Graph, component: list[str]) -> list[list[str]]:
    """A shortest cycle through each file of the component, each cycle once."""
    seen: set[tuple[str, ...]] = set()
    found = []
    for start in component:
        cycle = shortest_cycle(graph, start, component)
        ring = cycle[:-1]
        first = ring.index(min(ring))
        key = tuple(ring[first:] + ring[:first])
        if key not in seen:
            seen.add(key)
            found.append([*key, key[0]])
    return found


def describe(graph: Graph, components: list[list[str]]) -> str:
    lines = []
    for component in components:
        lines.append(f"files in one cycle: {', '.join(component)}")
        lines.extend("    " + " -> ".join(cycle) for cycle in cycles_of(graph, component))
    return "\n".join(lines)


def test_no_import_cycle_between_files_of_app() -> None:
    graph = import_graph()
    assert "app/errors.py" in graph and "app/main.py" in graph  # the walk found the app
    cycles = [c for c in strongly_connected(graph) if frozenset(c) not in ALLOWED_CYCLES]
    assert not cycles, "import cycles in app/:\n" + describe(graph, cycles)


def test_every_allowed_cycle_still_exists() -> None:
    """An allow-list entry goes as soon as its cycle is broken."""
    present = {frozenset(c) for c in strongly_connected(import_graph())}
    stale = [sorted(entry) for entry in ALLOWED_CYCLES if entry not in present]
    assert not stale, f"these cycles are gone; remove them from ALLOWED_CYCLES: {stale}"


def test_errors_imports_nothing_of_the_app() -> None:
    assert import_graph()["app/errors.py"] == set()


# --- the checker itself --------------------------------------------------------------------


def test_the_cycle_finder_finds_cycles_and_only_cycles() -> None:
    graph = {
        "a.py": {"b.py"},
        "b.py": {"c.py", "d.py"},
        "c.py": {"a.py"},
        "d.py": {"e.py"},
        "e.py": set(),
        "f.py": {"g.py"},
        "g.py": {"f.py"},
    }
    components = strongly_connected(graph)
    assert components == [["a.py", "b.py", "c.py"], ["f.py", "g.py"]]
    assert cycles_of(graph, components[0]) == [["a.py", "b.py", "c.py", "a.py"]]
    assert "f.py -> g.py -> f.py" in describe(graph, components)
    assert strongly_connected({"a.py": {"b.py"}, "b.py": set()}) == []


def test_imports_inside_functions_and_type_checking_blocks_count() -> None:
    source = """
from typing import TYPE_CHECKING
import app.db
from app.access import audit
from app.errors import Problem
if TYPE_CHECKING:
    from app.access.auth import Principal
def f():
    from app.events.notify import wait
    import app.queue as q
"""
    path = APP / "access" / "example.py"  # never written: only its package matters
    found = set(_imported_modules(path, ast.parse(source)))
    assert found == {
        "app.db",
        "app.access.audit",
        "app.errors",
        "app.access.auth",
        "app.events.notify",
        "app.queue",
    }
    relative = set(_imported_modules(path, ast.parse("from . import auth\nfrom .. import db\n")))
    assert relative == {"app.access.auth", "app.db"}
    assert [p.relative_to(ROOT).as_posix() for p in _targets("app.access.auth")] == [
        "app/__init__.py",
        "app/access/__init__.py",
        "app/access/auth.py",
    ]
