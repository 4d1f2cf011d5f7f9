"""write_result_files (the call ``analyze --dicom-out`` makes) and the PACS package's import layering."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumoview.errors import DicomReadError
from pneumoview.pacs.export import read_source_header, write_result_files


def test_non_dicom_source_gets_a_reason_not_a_crash(tmp_path: Path) -> None:
    picture = tmp_path / "chest.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(picture)
    written, problem = write_result_files(picture, tmp_path / "out", probability=0.4, threshold=0.5, label="normal")
    assert written == [] and problem.startswith("no DICOM result:")
    assert not (tmp_path / "out").exists()


def test_non_finite_probability_is_refused_with_a_reason(rg1_uncompressed: Path, tmp_path: Path) -> None:
    written, problem = write_result_files(
        rg1_uncompressed, tmp_path, probability=float("nan"), threshold=0.5, label="x"
    )
    assert written == [] and "finite" in problem


def test_source_without_identity_is_refused(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.SOPInstanceUID = "1.2.3"
    ds.PatientID = "X"
    path = tmp_path / "no-study.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(DicomReadError, match="StudyInstanceUID"):
        read_source_header(path)


def test_pacs_package_imports_neither_qt_nor_torch() -> None:
    code = (
        "import sys, pneumoview.pacs.scp, pneumoview.pacs.scu, pneumoview.pacs.web, pneumoview.pacs.sr, "
        "pneumoview.pacs.sc, pneumoview.pacs.export, pneumoview.commands.pacs, pneumoview.commands.listen; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('PySide6', 'torch')))"
    )
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]"
