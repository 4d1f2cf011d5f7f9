"""Every file of pydicom-data and of pydicom's own test set: scan -> decode -> display, or a clear reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file, get_testdata_files

from pneumoview.dicom.display import load_display_image, render
from pneumoview.dicom.files import is_skipped_name
from pneumoview.dicom.scan import PROBLEM_DICOMDIR, PROBLEM_NO_IMAGE, PROBLEM_UNREADABLE, scan
from pneumoview.dicom.suitability import assess
from pneumoview.errors import PixelDecodeError, PneumoViewError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")

PYDICOM_DATA = Path(get_testdata_file("RG1_UNCR.dcm")).parent  # the pydicom-data package's data_store
PYDICOM_TESTS = Path(get_testdata_file("CT_small.dcm")).parent


def _render_all(folder: Path) -> tuple[int, list[PneumoViewError], object]:
    result = scan([folder])
    rendered = 0
    failures: list[PneumoViewError] = []
    for record in result.images:
        assess(record)  # every image gets a verdict without raising
        try:
            image = load_display_image(record.path)
            shown = render(image)
        except PneumoViewError as exc:
            failures.append(exc)
            continue
        assert shown.dtype == np.uint8 and shown.shape == image.values.shape == (record.rows, record.columns)
        assert np.isfinite(image.values).all()
        rendered += 1
    return rendered, failures, result


def test_every_pydicom_data_file_renders() -> None:
    files = sorted(p for p in PYDICOM_DATA.iterdir() if p.is_file())
    assert len(files) >= 60
    rendered, failures, result = _render_all(PYDICOM_DATA)
    assert [str(f) for f in failures] == []
    assert result.problems == []
    assert rendered == len(files)


def test_every_pydicom_test_file_renders_or_says_why() -> None:
    rendered, failures, result = _render_all(PYDICOM_TESTS)
    assert rendered >= 85  # 88 of 93 image files here; the rest are broken on purpose or 12-bit JPEG
    for failure in failures:
        assert isinstance(failure, PixelDecodeError) and failure.path is not None
        assert failure.reason.startswith(("unsupported:", "cannot decode pixel data (")), failure.reason
    for problem in result.problems:
        assert problem.reason and problem.code in {PROBLEM_UNREADABLE, PROBLEM_DICOMDIR, PROBLEM_NO_IMAGE}
    # every file is accounted for: an image (rendered or failed with a reason) or a problem; only the
    # walker's skipped names (README files, hidden files: pneumoview.dicom.files) are not looked at
    all_files = [
        p
        for p in get_testdata_files()
        if Path(p).is_relative_to(PYDICOM_TESTS) and Path(p).is_file() and not is_skipped_name(Path(p).name)
    ]
    assert len(result.images) + len(result.problems) == result.files_seen == len(all_files)
