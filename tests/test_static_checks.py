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
