"""The repository's static checks, run by the README's test command (and so by CI).

- ``lint-imports``: the architecture contracts in ``pyproject.toml`` (layers; Qt only in
  ``pneumoview.ui``; pydicom only in ``pneumoview.dicom`` / ``pneumoview.pacs``; no torch in the GUI
  process; ``pneumoview`` never imports ``training``);
- ``ruff check`` and ``ruff format --check``: lint and format;
- ``mypy``: the Qt-free core listed in ``[tool.mypy] files``.

Each runs the tool installed with the ``test`` extra, on the source tree, and fails with the
tool's own report.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    """The tool beside this interpreter (the project's venv), else on PATH; skip only where absent."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return found


def _run(*command: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(list(command), cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def test_import_contracts_hold() -> None:
    out = _run(_tool("lint-imports"), "--no-cache")
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]


def test_ruff_lint_is_clean() -> None:
    out = _run(_tool("ruff"), "check", "--no-cache", ".")
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]


def test_ruff_format_is_applied() -> None:
    out = _run(_tool("ruff"), "format", "--check", "--no-cache", ".")
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]


@pytest.mark.slow
def test_mypy_on_the_qt_free_core() -> None:
    out = _run(_tool("mypy"), "--no-incremental", "--cache-dir", os.devnull)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]


def _cycles(graph: object, modules: list[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), i.e. the import circles."""
    adjacency = {m: sorted(set(graph.find_modules_directly_imported_by(m)) & set(modules)) for m in modules}  # type: ignore[attr-defined]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in adjacency[v]:
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

    for module in modules:
        if module not in index:
            visit(module)
    return found


def test_the_import_graph_has_no_circle() -> None:
    """No module reaches itself through imports (function-level imports count too)."""
    grimp = pytest.importorskip("grimp")
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 5000))
    graph = grimp.build_graph("pneumoview", "training")
    assert _cycles(graph, sorted(graph.modules)) == []


def test_the_circle_finder_finds_a_circle() -> None:
    """The check above can fail: a two-module circle is found."""

    class Graph:
        edges = {"a": {"b"}, "b": {"a", "c"}, "c": set()}

        def find_modules_directly_imported_by(self, module: str) -> set[str]:
            return self.edges[module]

    assert _cycles(Graph(), ["a", "b", "c"]) == [["a", "b"]]
