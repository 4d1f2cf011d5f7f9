"""dicom.pictures: PNG/JPEG/TIFF radiographs listed by the scan under "No DICOM header"; broken ones are Problems."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from pneumoview.dicom.pictures import NO_DICOM_HEADER, is_picture_file, picture_header
from pneumoview.dicom.scan import PROBLEM_NOT_REGULAR, PROBLEM_UNREADABLE, scan
from pneumoview.dicom.suitability import TOO_SMALL, assess
from pneumoview.errors import DicomReadError


@pytest.fixture(scope="module")
def cxr_images(shared_data: Path) -> Path:
    return shared_data / "cxr" / "images"


def test_without_pictures_the_scan_lists_them_as_problems(cxr_images: Path) -> None:
    result = scan([cxr_images])  # the command line's scan: DICOM only
    assert not result.images and len(result.problems) == 60
    assert all(p.code == PROBLEM_UNREADABLE for p in result.problems)


def test_real_pngs_are_listed_with_their_size(cxr_images: Path) -> None:
    result = scan(pictures=True, paths=[cxr_images])
    assert not result.problems and len(result.images) == 60  # 48 JPEG and 12 PNG files (the folder's README)
    formats = {".jpg": "JPEG", ".png": "PNG"}
    for record in result.images:
        assert record.picture_format == formats[record.path.suffix]
        assert record.sop_instance_uid == "" and record.patient_id == "" and record.study_uid == ""
    for record in result.images[::12]:
        with Image.open(record.path) as picture:
            assert (record.columns, record.rows) == picture.size
    patients = result.patients()
    assert [(p.patient_name, [s.description for s in p.studies]) for p in patients] == [
        (NO_DICOM_HEADER, [NO_DICOM_HEADER])
    ]
    assert len(patients[0].images) == 60


def test_pictures_are_analysable_with_a_caution(cxr_images: Path) -> None:
    record = scan(pictures=True, paths=[sorted(cxr_images.glob("*.png"))[0]]).images[0]
    verdict = assess(record)
    assert verdict.diagnosable and any("no DICOM header" in c for c in verdict.cautions)


def _hostile_folder(root: Path, cxr_images: Path, rg1: Path) -> Path:
    folder = root / "mixed"
    folder.mkdir()
    good = sorted(cxr_images.glob("*.png"))[0]
    shutil.copy(good, folder / "good.png")
    data = good.read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 3])
    (folder / "text.png").write_text("this is not a picture\n", encoding="utf-8")
    with Image.open(good) as picture:
        grey = picture.convert("L")
        grey.save(folder / "good.jpg", quality=90)
        grey.save(folder / "good.tif")
    for name in ("good.jpg", "good.tif"):
        raw = (folder / name).read_bytes()
        (folder / f"truncated{Path(name).suffix}").write_bytes(raw[: len(raw) // 2])
    shutil.copy(rg1, folder / "dicom_named.png")  # a DICOM file with a picture's name stays DICOM
    os.mkfifo(folder / "pipe.png")
    return folder


def test_hostile_pictures_become_problems(tmp_path: Path, cxr_images: Path, rg1_uncompressed: Path) -> None:
    result = scan(pictures=True, paths=[_hostile_folder(tmp_path, cxr_images, rg1_uncompressed)])
    images = {r.path.name: r.picture_format for r in result.images}
    assert images == {"good.png": "PNG", "good.jpg": "JPEG", "good.tif": "TIFF", "dicom_named.png": ""}
    problems = {p.path.name: p for p in result.problems}
    assert sorted(problems) == ["pipe.png", "text.png", "truncated.jpg", "truncated.png", "truncated.tif"]
    assert problems["pipe.png"].code == PROBLEM_NOT_REGULAR
    for name in ("text.png", "truncated.jpg", "truncated.png", "truncated.tif"):
        assert problems[name].code == PROBLEM_UNREADABLE
    assert "not a readable PNG" in problems["text.png"].reason
    assert "truncated" in problems["truncated.png"].reason.lower()


def test_decompression_bomb_guard_refuses_huge_pictures(
    tmp_path: Path, cxr_images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = shutil.copy(sorted(cxr_images.glob("*.png"))[0], tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the guard's limit, lowered: this picture is "huge"
    with pytest.raises(DicomReadError, match="too large"):
        picture_header(Path(path))


def test_small_pictures_are_viewable_not_analysable(tmp_path: Path) -> None:
    Image.new("L", (64, 48), 128).save(tmp_path / "tiny.png")
    assert is_picture_file(tmp_path / "tiny.png")
    record = scan(pictures=True, paths=[tmp_path]).images[0]
    assert (record.columns, record.rows, record.bits_stored) == (64, 48, 8)
    assert assess(record).code == TOO_SMALL
