"""What may be diagnosed: frontal chest CR/DX (and their secondary captures); everything else has a code."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from pneumoview.dicom.scan import ImageRecord, read_record
from pneumoview.dicom.suitability import (
    DX_FOR_PRESENTATION,
    DX_FOR_PROCESSING,
    FOR_PROCESSING,
    LATERAL_VIEW,
    NOT_CHEST,
    TOO_SMALL,
    UNKNOWN_BODY_PART,
    UNSUPPORTED_FILE,
    UNSUPPORTED_MODALITY,
    UNSUPPORTED_VIEW,
    assess,
    unsupported_file,
)
from pneumoview.errors import PixelDecodeError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def chest() -> ImageRecord:
    """RG1 (real PA chest CR) from pydicom-data, read from the test dependency itself."""
    return read_record(get_testdata_file("RG1_UNCR.dcm"))


def test_real_pa_chest_cr_is_diagnosable(chest: ImageRecord) -> None:
    verdict = assess(chest)
    assert verdict.diagnosable and verdict.code is None and verdict.cautions == ()
    assert "PA" in verdict.reason


def test_real_tibia_radiograph_is_not_chest() -> None:
    verdict = assess(read_record(get_testdata_file("RG3_UNCR.dcm")))
    assert not verdict.diagnosable and verdict.code == NOT_CHEST and "EXTREMITY" in verdict.reason


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "US1_UNCR.dcm", "rtdose.dcm"])
def test_other_modalities_are_unsupported(name: str) -> None:
    verdict = assess(read_record(get_testdata_file(name)))
    assert not verdict.diagnosable and verdict.code == UNSUPPORTED_MODALITY


def test_real_lateral_cspine_cr_is_refused() -> None:
    path = Path(get_testdata_file("DICOMDIR")).parent / "77654033" / "CR1" / "6154"
    record = read_record(path)
    assert (record.modality, record.view_position) == ("CR", "LL")
    assert assess(record).code == NOT_CHEST  # body part CSPINE is checked before the view
    assert assess(replace(record, body_part="CHEST", rows=2000, columns=2000)).code == LATERAL_VIEW


@pytest.mark.parametrize("view", ["LL", "RL", "LATERAL"])
def test_lateral_chest_views(chest: ImageRecord, view: str) -> None:
    verdict = assess(replace(chest, view_position=view))
    assert not verdict.diagnosable and verdict.code == LATERAL_VIEW


def test_lateral_stated_only_in_the_description(chest: ImageRecord) -> None:
    verdict = assess(replace(chest, view_position="", series_description="Thorax lat"))
    assert verdict.code == LATERAL_VIEW


@pytest.mark.parametrize("view", ["AP", "PA"])
def test_frontal_views_pass(chest: ImageRecord, view: str) -> None:
    assert assess(replace(chest, view_position=view)).diagnosable


def test_oblique_view_is_unsupported(chest: ImageRecord) -> None:
    assert assess(replace(chest, view_position="LAO")).code == UNSUPPORTED_VIEW


def test_dx_for_presentation_passes_and_for_processing_does_not(chest: ImageRecord) -> None:
    dx = replace(chest, modality="DX", sop_class_uid=DX_FOR_PRESENTATION)
    assert assess(dx).diagnosable
    raw = replace(dx, sop_class_uid=DX_FOR_PROCESSING)
    assert assess(raw).code == FOR_PROCESSING


def test_missing_body_part_and_view_are_cautions_not_refusals(chest: ImageRecord) -> None:
    verdict = assess(replace(chest, body_part="", view_position="", study_description="", series_description=""))
    assert verdict.diagnosable
    assert len(verdict.cautions) == 2


def test_chest_named_only_in_the_description(chest: ImageRecord) -> None:
    verdict = assess(replace(chest, body_part="", study_description="THORAX"))
    assert verdict.diagnosable and all("body part" not in c for c in verdict.cautions)


def test_secondary_capture_of_a_chest_passes_but_unlabelled_one_does_not() -> None:
    capture = read_record(get_testdata_file("SC_rgb.dcm"))
    assert capture.sop_class_uid.startswith("1.2.840.10008.5.1.4.1.1.7")
    assert assess(capture).code in {UNKNOWN_BODY_PART, TOO_SMALL}
    labelled = replace(capture, body_part="CHEST", view_position="PA", rows=1024, columns=1024)
    verdict = assess(labelled)
    assert verdict.diagnosable and "secondary capture" in verdict.reason
    ct_capture = replace(labelled, modality="CT")
    assert assess(ct_capture).code == UNSUPPORTED_MODALITY


def test_tiny_images_are_refused(chest: ImageRecord) -> None:
    assert assess(replace(chest, rows=128, columns=128)).code == TOO_SMALL


def test_unsupported_file_verdict() -> None:
    verdict = unsupported_file(PixelDecodeError("cannot decode", path="x.dcm"))
    assert not verdict.diagnosable and verdict.code == UNSUPPORTED_FILE and "cannot decode" in verdict.reason
