"""The code stays carriable (issue 11): no import circles, no module over the size limit.

The import graph is read from the source (ast), so the test sees every import, also
the ones inside functions and under TYPE_CHECKING: a circle of types is still a circle
of design, broken with a narrow interface (a Protocol the lower module owns).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent
COMPONENTS = ("storage", "compute", "tools")
GENERATED = ("storage/v1", "compute/v1")
LINES_MAX = 500


def source_files() -> list[Path]:
    files = []
    for folder in (*COMPONENTS, "tests"):
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if not rel.startswith(GENERATED):
                files.append(path)
    return files


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return "sixfold." + ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the sixfold modules it imports (a package import counts as its __init__)."""
    modules = {module_name(p): p for p in source_files() if p.relative_to(REPO).parts[0] != "tests"}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            for imported in targets:
                target = imported
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_has_no_circles() -> None:
    graph = import_graph()
    assert graph.get("sixfold.storage.node"), "the graph reader found no imports"
    assert cycles(graph) == [], "break these circles with a narrow interface"


def test_no_module_is_over_the_size_limit() -> None:
    over = {
        p.relative_to(REPO).as_posix(): n for p in source_files() if (n := len(p.read_text().splitlines())) > LINES_MAX
    }
    assert over == {}, f"split these along their concerns (limit {LINES_MAX} lines): {over}"
