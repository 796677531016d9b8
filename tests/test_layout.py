"""The package's layout, as issue 10 set it: modules of a readable size, no import cycle
at import time, and a core that never imports an integration at import time."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "wsgi_observe"
MAX_LINES = 700  # "about 600": the few near it are one cohesive piece each
CORE = (
    "config",
    "middleware",
    "_wsgi",
    "endpoints",
    "health",
    "checks",
    "histograms",
    "metrics",
    "redact",
    "system",
    "tracking",
)


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_time_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of ours that ``name`` imports when it is imported (not in functions, not
    under ``if TYPE_CHECKING``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If):
                if not _is_type_checking(node):
                    visit(node.body)
                    visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name in known)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target in known:
                    found.add(target)
                for alias in node.names:  # "from . import x" names a module
                    if f"{target}.{alias.name}" in known:
                        found.add(f"{target}.{alias.name}")

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    found.discard(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _import_time_imports(name, path, known) for name, path in modules.items()}


def test_no_module_is_over_the_size_limit() -> None:
    sizes = {
        name: len(path.read_text(encoding="utf-8").splitlines())
        for name, path in _modules().items()
    }
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_no_import_cycle_at_import_time() -> None:
    graph = _graph()
    # A package imports its submodules: an edge from a package's __init__ to its own
    # children, and from a child up to its parent package, is how Python loads them, not
    # a cycle of ours; drop the child -> ancestor edges.
    for name, targets in graph.items():
        targets -= {t for t in set(targets) if name.startswith(t + ".")}
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node)
    assert cycles == []


def test_the_core_never_imports_an_integration_at_import_time() -> None:
    graph = _graph()
    core = {f"wsgi_observe.{name}" for name in CORE}
    assert core <= set(graph)
    offending = {
        name: sorted(t for t in graph[name] if t.startswith("wsgi_observe.integrations"))
        for name in core
    }
    assert {name: found for name, found in offending.items() if found} == {}
