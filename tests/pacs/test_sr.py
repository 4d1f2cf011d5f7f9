"""TID 1500 SR: content round trip, identity copied from the source, dciodvfy and dsrdump."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from pacs_support import dciodvfy_errors, small_image

from pneumoview.labels import DEMO_MARK
from pneumoview.pacs.export import write_dicom_results
from pneumoview.pacs.sr import ModelResult, build_sr, read_sr

RESULT = ModelResult(
    probability=0.73,
    threshold=0.5,
    label="pneumoconiosis",
    model_name="PneumoLLM test",
    model_version="model-123",
    bundle_fingerprint="ab" * 32,
    demo=False,
)


@pytest.fixture
def source_header(rg1_uncompressed: Path) -> pydicom.Dataset:
    return pydicom.dcmread(rg1_uncompressed, stop_before_pixels=True)


@pytest.mark.parametrize("probability, finding", [(0.73, "Present"), (0.2, "Absent"), (0.5, "Present")])
def test_sr_carries_finding_probability_threshold_and_source(source_header, probability, finding) -> None:
    result = ModelResult(probability, 0.5, "x", model_name="M", model_version="v", bundle_fingerprint="f" * 64)
    values = read_sr(build_sr(source_header, result))
    assert values["finding"] == finding
    assert values["probability"] == pytest.approx(probability)
    assert values["threshold"] == pytest.approx(0.5)
    assert values["demo"] is False
    assert values["algorithm"] == "M"
    assert values["source_uids"] == [source_header.SOPInstanceUID]


def test_sr_copies_identity_never_invents_it(source_header) -> None:
    sr = build_sr(source_header, RESULT)
    for keyword in (
        "PatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "AccessionNumber",
        "StudyID",
        "StudyDate",
    ):
        assert str(sr.get(keyword)) == str(source_header.get(keyword)), keyword
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert sr.SOPInstanceUID.startswith("2.25.") and sr.SeriesInstanceUID.startswith("2.25.")
    assert sr.SOPInstanceUID != source_header.SOPInstanceUID
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source_header.SOPInstanceUID


def test_demo_result_is_marked_everywhere(source_header) -> None:
    sr = build_sr(source_header, ModelResult(0.9, 0.5, "pneumoconiosis", model_name="DEMO tiny", demo=True))
    assert read_sr(sr)["demo"] is True
    assert DEMO_MARK in sr.SeriesDescription
    texts = [i.TextValue for i in _walk(sr) if i.ValueType == "TEXT"]
    assert f"state={DEMO_MARK}" in texts


def test_non_finite_values_are_refused(source_header) -> None:
    for bad in (float("nan"), float("inf"), -0.1, 1.5):
        with pytest.raises(ValueError):
            build_sr(source_header, ModelResult(bad, 0.5, "x"))
        with pytest.raises(ValueError):
            build_sr(source_header, ModelResult(0.5, bad, "x"))


def test_written_sr_and_sc_pass_dciodvfy_and_dsrdump(rg1_uncompressed: Path, tmp_path: Path) -> None:
    from pneumoview.preprocess import prepare

    crop = prepare(rg1_uncompressed).crop
    demo = ModelResult(0.61, 0.5, "pneumoconiosis", model_name="DEMO tiny", model_version="demo", demo=True)
    written = write_dicom_results(rg1_uncompressed, tmp_path, demo, crop=crop)
    assert sorted(p.name[:3] for p in written) == ["SC-", "SR-"]
    for path in written:
        assert dciodvfy_errors(path) == [], path.name
    sr_path = next(p for p in written if p.name.startswith("SR-"))
    dsrdump = shutil.which("dsrdump")
    if dsrdump is None:
        pytest.skip("dsrdump not installed (Debian package dcmtk)")
    dump = subprocess.run([dsrdump, str(sr_path)], check=False, capture_output=True, text=True, timeout=60)
    assert dump.returncode == 0, dump.stderr
    assert "Comprehensive SR Document" in dump.stdout
    assert '"Probability of pneumoconiosis")="0.61"' in dump.stdout
    assert '(52101004,SCT,"Present")' in dump.stdout
    assert DEMO_MARK in dump.stdout


def test_same_result_written_twice_replaces_not_duplicates(rg1_uncompressed: Path, tmp_path: Path) -> None:
    first = write_dicom_results(rg1_uncompressed, tmp_path, RESULT)
    second = write_dicom_results(rg1_uncompressed, tmp_path, RESULT)
    assert first == second and sorted(tmp_path.iterdir()) == first
    other = write_dicom_results(rg1_uncompressed, tmp_path, ModelResult(0.73, 0.3, "x", bundle_fingerprint="ab" * 32))
    assert other != first


def test_small_synthetic_source_also_conforms(tmp_path: Path) -> None:
    source = tmp_path / "src.dcm"
    small_image().save_as(source, enforce_file_format=True)
    (sr,) = write_dicom_results(source, tmp_path / "out", RESULT)
    assert dciodvfy_errors(sr) == []


def _walk(dataset):
    for item in dataset.get("ContentSequence", []):
        yield item
        yield from _walk(item)


@pytest.mark.parametrize("decision", ["agree", "disagree", "uncertain"])
def test_reader_decision_sr(source_header, tmp_path: Path, decision: str) -> None:
    from pneumoview.pacs.sr import build_decision_sr

    sr = build_decision_sr(source_header, decision, RESULT, reviewer="Dr Test")
    values = read_sr(sr)
    assert values["decision"] == decision and values["finding"] == "Present"
    assert values["source_uids"] == [source_header.SOPInstanceUID]
    assert str(sr.PatientID) == str(source_header.PatientID)
    path = tmp_path / "decision.dcm"
    sr.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    with pytest.raises(ValueError):
        build_decision_sr(source_header, "maybe", RESULT)


def test_the_sr_carries_the_quality_gates_verdict(rg1_uncompressed) -> None:
    import pydicom

    from pneumoview.results import Provenance, analysed, identify

    result = analysed(
        identify(rg1_uncompressed, "1.2.3"),
        0.7,
        class_names=("pneumoconiosis", "normal"),
        demo=False,
        provenance=Provenance(bundle_id="m1", threshold=0.5),
        quality_codes=("pixel-spacing-coarse", "lungs-cut-off"),
        below_quality_gate=True,
    )
    source = pydicom.dcmread(rg1_uncompressed, stop_before_pixels=True)
    values = read_sr(build_sr(source, ModelResult.of(result)))
    assert "quality_gate=below" in values["parameters"]
    assert "quality_codes=pixel-spacing-coarse;lungs-cut-off" in values["parameters"]
    ungraded = read_sr(build_sr(source, ModelResult(probability=0.7, threshold=0.5, label="pneumoconiosis")))
    assert not any(p.startswith("quality") for p in ungraded["parameters"])
