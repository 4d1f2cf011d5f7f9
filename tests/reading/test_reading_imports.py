"""The reading workflow is plain Python: no Qt, no torch, checked on the source and at run time."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

READING = Path(__file__).resolve().parents[2] / "pneumoview" / "reading"
FORBIDDEN = {"PySide6", "shiboken6", "torch", "torchvision", "transformers", "open_clip"}


def test_reading_sources_import_neither_qt_nor_torch() -> None:
    offenders = []
    sources = sorted(READING.glob("*.py"))
    assert len(sources) >= 6
    for path in sources:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            )
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_importing_the_workflow_loads_neither_qt_nor_torch() -> None:
    code = (
        "import sys; import pneumoview.reading.export, pneumoview.reading.agreement, pneumoview.reading.pdf, "
        "pneumoview.commands.readings; print(sorted(m for m in ('PySide6', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
