"""Secondary Capture of the lung crop: pixels, burned-in demo mark, identity, dciodvfy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pacs_support import dciodvfy_errors, small_image

from pneumoview.labels import DEMO_MARK
from pneumoview.pacs.export import write_dicom_results
from pneumoview.pacs.sc import SC_SIZE, build_sc, render_crop
from pneumoview.pacs.sr import ModelResult

REAL = ModelResult(0.2, 0.5, "normal", model_name="PneumoLLM", model_version="m1", bundle_fingerprint="c" * 64)
DEMO = ModelResult(0.2, 0.5, "normal", model_name="DEMO tiny", model_version="demo", demo=True)


def _crop() -> np.ndarray:
    ramp = np.linspace(0.0, 1.0, 224, dtype=np.float32)
    return np.tile(ramp, (224, 1))


def test_render_keeps_the_crop_and_burns_the_demo_mark_only_for_demo() -> None:
    real, demo = render_crop(_crop(), REAL), render_crop(_crop(), DEMO)
    assert real.shape == (SC_SIZE, SC_SIZE) and real.dtype == np.uint8
    middle = slice(SC_SIZE // 4, 3 * SC_SIZE // 4)
    expected = np.linspace(0, 255, SC_SIZE)[middle]
    assert np.abs(real[SC_SIZE // 2, middle].astype(float) - expected).max() < 4  # the crop, scaled
    top = slice(0, 40)
    assert np.abs(real[top, middle].astype(float) - expected).max() < 4  # no text on a real result's top band
    assert not np.array_equal(real[top], demo[top])  # the demo mark is burned into it
    assert (demo[top] == 255).sum() > 200  # white text pixels


def test_heatmap_must_match_the_crop() -> None:
    with pytest.raises(ValueError):
        render_crop(_crop(), REAL, heatmap=np.zeros((10, 10), np.float32))
    with pytest.raises(ValueError):
        render_crop(np.full((224, 224), np.nan, np.float32), REAL)
    blended = render_crop(_crop(), REAL, heatmap=np.ones((224, 224), np.float32))
    assert blended.mean() > render_crop(_crop(), REAL).mean()


def test_sc_in_the_source_study_with_its_identity(rg1_uncompressed: Path) -> None:
    source = pydicom.dcmread(rg1_uncompressed, stop_before_pixels=True)
    sc = build_sc(source, _crop(), DEMO)
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "AccessionNumber", "StudyDate"):
        assert str(sc.get(keyword)) == str(source.get(keyword)), keyword
    assert sc.SeriesInstanceUID != source.SeriesInstanceUID and sc.SOPInstanceUID.startswith("2.25.")
    assert sc.BurnedInAnnotation == "YES" and DEMO_MARK in sc.SeriesDescription and sc.ImageComments == DEMO_MARK
    assert list(sc.PatientOrientation) == list(source.PatientOrientation)
    assert sc.pixel_array.shape == (SC_SIZE, SC_SIZE)


def test_sc_of_a_source_without_orientation_passes_dciodvfy(tmp_path: Path) -> None:
    source = tmp_path / "src.dcm"
    small_image().save_as(source, enforce_file_format=True)
    written = write_dicom_results(source, tmp_path / "out", REAL, crop=_crop())
    sc = next(p for p in written if p.name.startswith("SC-"))
    assert dciodvfy_errors(sc) == []
    assert "PatientOrientation" in pydicom.dcmread(sc) and not pydicom.dcmread(sc).PatientOrientation
