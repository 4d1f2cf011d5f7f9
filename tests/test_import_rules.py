"""The architecture's import rules, checked on the source (static) and at run time.

- only ``pneumoview/ui/`` imports PySide6;
- ``pneumoview/dicom/`` imports neither torch nor Qt;
- ``pneumoview`` never imports ``training`` (training depends on pneumoview);
- the DICOM pipeline loads without torch, so the window opens fast.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pneumoview"


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _top_level(names: set[str]) -> set[str]:
    return {name.split(".")[0] for name in names}


def _sources(root: Path) -> list[Path]:
    files = sorted(root.rglob("*.py"))
    assert files, f"no sources under {root}"
    return files


def test_only_ui_imports_qt() -> None:
    offenders = [
        str(p.relative_to(PACKAGE))
        for p in _sources(PACKAGE)
        if "ui" not in p.relative_to(PACKAGE).parts[:1]
        and _top_level(_imported_modules(p)) & {"PySide6", "shiboken6", "PyQt5", "PyQt6"}
    ]
    assert offenders == []


def test_dicom_imports_neither_torch_nor_qt() -> None:
    offenders = [
        str(p.relative_to(PACKAGE))
        for p in _sources(PACKAGE / "dicom")
        if _top_level(_imported_modules(p)) & {"torch", "torchvision", "transformers", "open_clip", "PySide6"}
    ]
    assert offenders == []


def test_pneumoview_never_imports_training() -> None:
    offenders = [
        str(p.relative_to(PACKAGE)) for p in _sources(PACKAGE) if "training" in _top_level(_imported_modules(p))
    ]
    assert offenders == []


@pytest.mark.parametrize(
    "module",
    ["pneumoview.cli", "pneumoview.dicom.scan", "pneumoview.dicom.display", "pneumoview.preprocess"],
)
def test_light_modules_do_not_load_torch_or_qt(module: str) -> None:
    code = (
        "import importlib, sys;"
        f"importlib.import_module({module!r});"
        "heavy = sorted(m for m in ('torch', 'transformers', 'open_clip', 'PySide6', 'training') if m in sys.modules);"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
