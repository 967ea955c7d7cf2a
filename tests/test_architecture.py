"""The shape ARCHITECTURE.md describes, checked on the code: no import cycle anywhere in qtapp, and
the core's sibling imports at the top of its modules (the layers contract is import-linter's, run by
tests/core/test_no_qt.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

CORE = Path(__file__).resolve().parents[1] / "qtapp" / "core"


def _cycles(graph, modules) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(m):
        index[m] = low[m] = len(index)
        stack.append(m)
        on_stack.add(m)
        for n in graph.find_modules_directly_imported_by(m):
            if n not in modules:
                continue
            if n not in index:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in on_stack:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            group = []
            while True:
                n = stack.pop()
                on_stack.discard(n)
                group.append(n)
                if n == m:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for m in sorted(modules):
        if m not in index:
            visit(m)
    return found


def test_no_import_cycle_in_qtapp():
    graph = grimp.build_graph("qtapp")  # imports inside functions count too
    assert _cycles(graph, set(graph.modules)) == []


def test_the_cycle_finder_finds_a_cycle(tmp_path, monkeypatch):
    (tmp_path / "loop").mkdir()
    (tmp_path / "loop" / "__init__.py").write_text("")
    (tmp_path / "loop" / "a.py").write_text("from . import b\n")
    (tmp_path / "loop" / "b.py").write_text("def f():\n    from . import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("loop")
    assert _cycles(graph, set(graph.modules)) == [["loop.a", "loop.b"]]


def _imports_in_functions(path: Path):
    """(line, text) of each qtapp import inside a function body of `path`."""
    source = path.read_text()
    lines = source.splitlines()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for n in ast.walk(node):
            ours = (isinstance(n, ast.ImportFrom) and (n.level > 0 or (n.module or "").startswith("qtapp"))) or (
                isinstance(n, ast.Import) and any(a.name.startswith("qtapp") for a in n.names))
            if ours:
                yield n.lineno, lines[n.end_lineno - 1]


def test_the_core_imports_its_siblings_at_the_top_of_its_modules():
    """Fewer than ten sibling imports inside function bodies, each saying why it is there (an optional
    extra, start-up time): one hidden in a function to dodge a cycle is a module in the wrong layer."""
    found = [(p.relative_to(CORE.parent.parent), line, text) for p in sorted(CORE.rglob("*.py"))
             for line, text in _imports_in_functions(p)]
    assert len(found) < 10, found
    assert [f for f in found if "#" not in f[2]] == []
