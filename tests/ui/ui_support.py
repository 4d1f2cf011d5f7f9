"""Helpers shared by the UI tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from pneumoview.settings import Settings, save_settings

if TYPE_CHECKING:
    from pneumoview.ui.main_window import MainWindow

JUNK_TEXT = "notes.txt"
JUNK_TRUNCATED = "truncated.dcm"


def reviewer_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ``PNEUMOVIEW_HOME`` under ``tmp_path`` whose settings name the reviewer "Dr Test"."""
    home = tmp_path / "home"
    monkeypatch.setenv("PNEUMOVIEW_HOME", str(home))
    save_settings(Settings(reviewer_name="Dr Test"))
    return home


def make_study_folder(root: Path, rg1_uncompressed: Path, rg1_j2k: Path) -> Path:
    """A folder like a clinic's export: the real RG1 chest CR (two transfer syntaxes, symlinked),
    a real CT from pydicom's test files (not a radiograph: unsupported), and two junk files."""
    folder = root / "incoming"
    (folder / "sub").mkdir(parents=True)
    os.symlink(rg1_uncompressed, folder / "RG1_UNCR.dcm")
    os.symlink(rg1_j2k, folder / "sub" / "RG1_J2KR.dcm")
    os.symlink(get_testdata_file("CT_small.dcm"), folder / "CT_small.dcm")
    (folder / JUNK_TEXT).write_text("not a DICOM file\n", encoding="utf-8")
    # A DICOM file cut short inside its header (a failed copy).
    (folder / JUNK_TRUNCATED).write_bytes(Path(get_testdata_file("MR_small.dcm")).read_bytes()[:300])
    return folder


def qimage_to_array(image) -> np.ndarray:  # noqa: ANN001 - QImage
    """Format_Grayscale8 QImage -> uint8 HxW (copy)."""
    from PySide6.QtGui import QImage

    image = image.convertToFormat(QImage.Format.Format_Grayscale8)
    w, h, stride = image.width(), image.height(), image.bytesPerLine()
    buffer = np.frombuffer(image.constBits(), dtype=np.uint8, count=stride * h).reshape(h, stride)
    return buffer[:, :w].copy()


def open_window_on(qtbot, paths: list[Path]) -> MainWindow:  # noqa: ANN001
    """A shown main window that has finished scanning ``paths``."""
    from pneumoview.ui.main_window import MainWindow

    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignal(window.scanFinished, timeout=60000):
        window.open_paths(paths)
    return window
