"""Folder scan: header-only reads, grouping, tolerance of junk, DICOMDIR, preamble-less files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.fileset import FileSet

from pneumoview.dicom.scan import (
    PROBLEM_DICOMDIR,
    PROBLEM_NO_IMAGE,
    PROBLEM_UNREADABLE,
    ImageRecord,
    iter_files,
    read_record,
    scan,
)
from pneumoview.errors import DicomReadError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

DICOMDIR_TESTS = Path(get_testdata_file("DICOMDIR")).parent


def _copy(name: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(get_testdata_file(name), dest)
    return dest


def test_read_record_of_rg1_matches_its_header(rg1_uncompressed: Path) -> None:
    record = read_record(rg1_uncompressed)
    ds = pydicom.dcmread(rg1_uncompressed, stop_before_pixels=True)
    assert isinstance(record, ImageRecord)
    assert record.path == rg1_uncompressed
    assert record.sop_instance_uid == ds.SOPInstanceUID
    assert record.patient_id == ds.PatientID and record.patient_name == str(ds.PatientName)
    assert record.study_uid == ds.StudyInstanceUID and record.series_uid == ds.SeriesInstanceUID
    assert record.study_date == ds.StudyDate and record.accession == ds.AccessionNumber
    assert (record.modality, record.view_position, record.body_part) == ("CR", "PA", "CHEST")
    assert (record.rows, record.columns) == (1955, 1841)
    assert record.photometric == "MONOCHROME1" and record.bits_stored == 15
    assert record.number_of_frames == 1
    assert record.pixel_spacing is None  # PixelSpacing is 0\0: unusable, so not reported
    assert record.transfer_syntax == pydicom.uid.ExplicitVRLittleEndian


def test_pixel_spacing_falls_back_to_imager_pixel_spacing(tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.PixelSpacing
    ds.ImagerPixelSpacing = [0.139, 0.143]
    out = tmp_path / "imager.dcm"
    ds.save_as(out)
    assert read_record(out).pixel_spacing == pytest.approx((0.139, 0.143))


def test_scan_groups_like_the_dicomdir_index() -> None:
    """The DICOMDIR of pydicom's test set is an independent record of patient/study/series."""
    fileset = FileSet(pydicom.dcmread(DICOMDIR_TESTS / "DICOMDIR"))
    expected = set()
    for instance in fileset:
        ds = instance.load()
        expected.add((ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID, Path(instance.path).resolve()))
    folders = sorted(
        {Path(instance.path).resolve().relative_to(DICOMDIR_TESTS.resolve()).parts[0] for instance in fileset}
    )
    result = scan([DICOMDIR_TESTS / folder for folder in folders])
    got = set()
    for patient in result.patients():
        for study in patient.studies:
            for series in study.series:
                for image in series.images:
                    assert image.patient_id == patient.patient_id
                    assert image.study_uid == study.study_uid and image.series_uid == series.series_uid
                    got.add((patient.patient_id, study.study_uid, series.series_uid, image.path.resolve()))
    assert got == expected
    assert result.problems == []  # those folders hold images only


def test_scan_reports_every_bad_file_and_loads_the_rest(tmp_path: Path) -> None:
    good = _copy("CT_small.dcm", tmp_path / "a" / "b" / "c" / "ct.dcm")
    _copy("MR_small.dcm", tmp_path / "a" / "MR_NO_SUFFIX")
    (tmp_path / "notes.txt").write_text("not an image\n")
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "junk.dcm").write_bytes(os.urandom(4000))
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes()[:300])
    _copy("DICOMDIR", tmp_path / "DICOMDIR")
    _copy("rtplan.dcm", tmp_path / "plan.dcm")
    result = scan([tmp_path])
    assert sorted(r.path.name for r in result.images) == ["MR_NO_SUFFIX", "ct.dcm"]
    by_name = {p.path.name: p for p in result.problems}
    assert set(by_name) == {"notes.txt", "empty.dcm", "junk.dcm", "truncated.dcm", "DICOMDIR", "plan.dcm"}
    for name in ("notes.txt", "empty.dcm", "junk.dcm", "truncated.dcm"):
        assert by_name[name].code == PROBLEM_UNREADABLE
        assert by_name[name].reason
    assert by_name["DICOMDIR"].code == PROBLEM_DICOMDIR
    assert by_name["plan.dcm"].code == PROBLEM_NO_IMAGE and "RT Plan" in by_name["plan.dcm"].reason
    assert {p.path.name for p in result.errors} == {"empty.dcm", "junk.dcm", "notes.txt", "truncated.dcm"}
    assert result.files_seen == 8
    assert good in [r.path for r in result.images]


def test_file_without_preamble_is_read(tmp_path: Path) -> None:
    raw = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    assert raw[128:132] == b"DICM"
    no_preamble = tmp_path / "nopreamble"
    no_preamble.write_bytes(raw[132:])  # file meta and dataset, no preamble/"DICM"
    record = read_record(no_preamble)
    assert record.sop_instance_uid == pydicom.dcmread(get_testdata_file("CT_small.dcm")).SOPInstanceUID
    assert record.modality == "CT"


def test_dataset_without_file_meta_is_read() -> None:
    record = read_record(get_testdata_file("MR_small_implicit.dcm"))
    assert record.rows == 64 and record.modality == "MR"


@pytest.mark.parametrize("content", [b"", b"hello world\n" * 50, bytes(range(256)) * 20])
def test_read_record_rejects_non_dicom(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.dcm"
    path.write_bytes(content)
    with pytest.raises(DicomReadError) as info:
        read_record(path)
    assert info.value.path == path


def test_read_record_of_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(DicomReadError, match="not found"):
        read_record(tmp_path / "gone.dcm")


def test_iter_files_mixes_files_and_folders_and_recurses(tmp_path: Path) -> None:
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "e" / "1").write_bytes(b"x")
    (tmp_path / "d" / "2").write_bytes(b"x")
    single = tmp_path / "single"
    single.write_bytes(b"x")
    files = list(iter_files([tmp_path / "d", single]))
    assert files == [tmp_path / "d" / "2", tmp_path / "d" / "e" / "1", single]


def test_symlinked_folders_are_not_followed(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    _copy("CT_small.dcm", tmp_path / "real" / "ct.dcm")
    (tmp_path / "real" / "loop").symlink_to(tmp_path / "real", target_is_directory=True)
    assert scan([tmp_path]).images and len(scan([tmp_path]).images) == 1


def test_progress_and_cancel(tmp_path: Path) -> None:
    for i in range(5):
        _copy("CT_small.dcm", tmp_path / f"{i}.dcm")
    calls: list[tuple[int, int]] = []
    result = scan([tmp_path], progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 5) for i in range(1, 6)]
    assert len(result.images) == 5 and not result.cancelled

    seen: list[int] = []
    partial = scan([tmp_path], progress=lambda d, t: seen.append(d), cancel=lambda: len(seen) >= 2)
    assert partial.cancelled and len(partial.images) == 2 and partial.files_seen == 2


def test_grouping_sorts_series_and_instances(tmp_path: Path) -> None:
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for series_number, instance in [(2, 3), (1, 2), (2, 1), (1, 1)]:
        ds = base.copy()
        ds.SeriesNumber = series_number
        ds.SeriesInstanceUID = f"1.2.3.{series_number}"
        ds.InstanceNumber = instance
        ds.SOPInstanceUID = f"1.2.3.{series_number}.{instance}"
        ds.save_as(tmp_path / f"s{series_number}i{instance}.dcm")
    (patient,) = scan([tmp_path]).patients()
    (study,) = patient.studies
    assert [s.series_number for s in study.series] == [1, 2]
    assert [[i.instance_number for i in s.images] for s in study.series] == [[1, 2], [1, 3]]
    assert len(patient.images) == 4 and len(study.images) == 4


def _pydicom_text(ds: pydicom.Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return "\\".join(str(v) for v in value).strip()
    return str(value).strip()


def test_fast_header_fields_agree_with_pydicom_conversion_on_the_whole_corpus() -> None:
    """read_record decodes raw bytes itself; pydicom's own conversion is the reference."""
    folders = [Path(get_testdata_file("CT_small.dcm")).parent, Path(get_testdata_file("RG1_UNCR.dcm")).parent]
    records = scan(folders).images
    assert len(records) > 150
    checked_names = 0
    for record in records:
        ds = pydicom.dcmread(record.path, stop_before_pixels=True, force=True)
        for field, keyword in [
            ("patient_id", "PatientID"),
            ("patient_name", "PatientName"),
            ("study_uid", "StudyInstanceUID"),
            ("series_uid", "SeriesInstanceUID"),
            ("study_date", "StudyDate"),
            ("accession", "AccessionNumber"),
            ("study_description", "StudyDescription"),
            ("series_description", "SeriesDescription"),
            ("photometric", "PhotometricInterpretation"),
        ]:
            expected = _pydicom_text(ds, keyword)
            got = getattr(record, field)
            if field == "photometric":
                expected = expected.upper()
            assert got == expected, (record.path.name, field)
        checked_names += bool(record.patient_name)
        assert record.modality == _pydicom_text(ds, "Modality").upper()
        assert (record.rows, record.columns) == (int(ds.Rows), int(ds.Columns))
        if str(ds.get("NumberOfFrames", "")).isdigit():
            assert record.number_of_frames == max(1, int(ds.NumberOfFrames))
        if str(ds.get("SeriesNumber", "")).lstrip("-").isdigit():
            assert record.series_number == int(ds.SeriesNumber)
        if ds.get("PixelSpacing") and all(float(v) > 0 for v in ds.PixelSpacing):
            assert record.pixel_spacing == pytest.approx(tuple(float(v) for v in ds.PixelSpacing))
    assert checked_names > 100


def test_non_latin_character_sets(tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for charset, name in [("ISO_IR 192", "Müller^Zoë"), ("ISO_IR 144", "Иванов^Иван"), ("ISO_IR 100", "Gonçalves^Zé")]:
        ds.SpecificCharacterSet = charset
        ds.PatientName = name
        path = tmp_path / f"{charset}.dcm"
        ds.save_as(path)
        assert read_record(path).patient_name == name


def test_iso2022_character_sets_of_pydicoms_charset_files() -> None:
    """Multi-byte / escape-sequence sets go through pydicom's own decoding: same names."""
    from pydicom.data import get_charset_files

    files = [Path(p) for p in get_charset_files("chr*.dcm")]
    assert len(files) > 10
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if "Rows" not in ds or "PatientName" not in ds:
            continue
        assert read_record(path).patient_name == str(ds.PatientName).strip(), path.name


def test_junk_and_bogus_lengths_do_not_allocate_gigabytes(tmp_path: Path) -> None:
    """A lenient read once allocated ~1.9 GB for a 200-byte file: file.read(bogus length)."""
    import tracemalloc

    (tmp_path / "junk.txt").write_bytes(b"not dicom " * 20)
    # Looks like a preamble-less implicit-VR data set: tag (0008,0020), then a 2 GB length.
    (tmp_path / "bogus_length").write_bytes(b"\x08\x00\x20\x00" + (0x7FFFFFF0).to_bytes(4, "little") + b"2024" * 50)
    tracemalloc.start()
    try:
        result = scan([tmp_path])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert {p.path.name for p in result.problems} == {"junk.txt", "bogus_length"}
    assert peak < 20 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def test_one_walker_rule_hidden_and_clutter_skipped_fifos_reported(tmp_path: Path) -> None:
    """pneumoview.dicom.files.walk_files is the walker of scan, analyze and training."""
    from pneumoview.dicom.files import walk_files

    (tmp_path / "sub").mkdir()
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.dcm").write_bytes(b"x")
    for name in ("a.dcm", "._a.dcm", ".DS_Store", "Thumbs.db", "README.txt", "IM0001"):
        (tmp_path / name).write_bytes(b"x")
    os.mkfifo(tmp_path / "sub" / "pipe")
    names = [p.relative_to(tmp_path).as_posix() for p in walk_files([tmp_path])]
    assert names == ["IM0001", "README.txt", "a.dcm", "sub/pipe"]
    assert list(walk_files([tmp_path / "._a.dcm"])) == [tmp_path / "._a.dcm"]  # named directly: kept


def test_dicom_file_rule_preamble_or_dicom_name_with_a_plausible_tag(tmp_path: Path) -> None:
    from pneumoview.dicom.files import is_dicom_file

    raw = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    (tmp_path / "with.png").write_bytes(raw)  # preamble: DICOM whatever the name
    (tmp_path / "bare.dcm").write_bytes(raw[132:])  # no preamble, DICOM name, (0002,xxxx) first
    (tmp_path / "IM0001").write_bytes(raw[132:])  # no suffix counts as a DICOM name
    (tmp_path / "bare.png").write_bytes(raw[132:])  # no preamble and a picture's name
    (tmp_path / "text.dcm").write_bytes(b"hello world, not DICOM")
    os.mkfifo(tmp_path / "pipe.dcm")
    verdicts = {
        name: is_dicom_file(tmp_path / name)
        for name in ("with.png", "bare.dcm", "IM0001", "bare.png", "text.dcm", "pipe.dcm")
    }
    assert verdicts == {
        "with.png": True,
        "bare.dcm": True,
        "IM0001": True,
        "bare.png": False,
        "text.dcm": False,
        "pipe.dcm": False,
    }
