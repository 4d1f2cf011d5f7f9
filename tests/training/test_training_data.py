"""Training data: discovery (folder / CSV), validation summary, crop cache on the inference path."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumoview.errors import TrainingDataError
from training.data import CropCache, discover, parse_label, require_ok, validate
from training.synthetic import chest_image


def _png(path: Path, seed: int, *, sick: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(chest_image(np.random.default_rng(seed), sick=sick, size=128)).save(path)
    return path


@pytest.fixture()
def folder_data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for i in range(3):
        _png(root / "pneumoconiosis" / f"s{i}.png", i, sick=True)
        _png(root / "Normal" / "nested" / f"n{i}.jpg".replace(".jpg", ".png"), 100 + i, sick=False)
    shutil.copy(root / "pneumoconiosis" / "s0.png", root / "pneumoconiosis" / "s0_copy.png")  # exact duplicate
    (root / "Normal" / "broken.png").write_bytes(b"not an image at all")
    (root / "README.txt").write_text("notes")
    (root / "misc").mkdir()
    _png(root / "misc" / "x.png", 999, sick=False)
    return root


def test_parse_label_aliases() -> None:
    assert parse_label("Pneumoconiosis") == 0
    assert parse_label(" abnormal ") == 0
    assert parse_label("NORMAL") == 1
    assert parse_label("healthy") == 1
    assert parse_label("maybe") is None


def test_folder_discovery_labels_nested_files_and_unlabelled(folder_data: Path) -> None:
    samples, problems = discover(folder_data)
    by_name = {s.path.name: s for s in samples}
    assert by_name["s1.png"].label == 0
    assert by_name["n2.png"].label == 1  # nested folder under a case-insensitive class name
    assert by_name["n2.png"].patient_source == "file"  # PNG without CSV: its own patient
    assert "x.png" not in by_name
    assert any(p.path.name == "misc" and "not a class" in p.reason for p in problems)
    assert not any(p.path.name == "README.txt" for p in problems)


def test_validation_summary_lists_problems_and_keeps_first_duplicate(folder_data: Path, tmp_path: Path) -> None:
    data = validate(folder_data, folds=2, cache=CropCache(tmp_path / "cache"))
    s = data.summary
    assert s.images_per_class == [3, 3]  # duplicate and broken file left out
    assert [Path(u["path"]).name for u in s.unreadable] == ["broken.png"]
    assert len(s.duplicates) == 1 and sorted(Path(p).name for p in s.duplicates[0]) == ["s0.png", "s0_copy.png"]
    assert s.patients_without_id == 6 and any("no patient ID" in w for w in s.warnings)
    assert s.ok and len(data) == 6
    assert len(s.file_list_sha256) == 64
    text = s.format_text()
    assert "broken.png" in text and "exact duplicates" in text


def test_refusal_when_too_few_patients_for_the_folds(folder_data: Path, tmp_path: Path) -> None:
    data = validate(folder_data, folds=5, cache=CropCache(tmp_path / "cache"))
    assert not data.summary.ok
    assert any("only 3 patient" in e for e in data.summary.errors)
    with pytest.raises(TrainingDataError, match="at least 5 are needed"):
        require_ok(data.summary)


def test_refusal_when_a_class_is_empty(tmp_path: Path) -> None:
    for i in range(3):
        _png(tmp_path / "d" / "normal" / f"{i}.png", i, sick=False)
    data = validate(tmp_path / "d", folds=2, cache=CropCache(tmp_path / "cache"))
    assert any("'pneumoconiosis' has no usable images" in e for e in data.summary.errors)


def test_csv_with_patients_aliases_mixed_patient_and_unknown_label(tmp_path: Path) -> None:
    for i in range(4):
        _png(tmp_path / "img" / f"{i}.png", i, sick=i < 2)
    (tmp_path / "labels.csv").write_text(
        "path,label,patient_id,extra\n"
        "img/0.png,abnormal,P1,a\n"
        "img/1.png,pneumoconiosis,P2,b\n"
        "img/2.png,normal,P1,c\n"  # P1 under both labels
        "img/3.png,normal,P3,d\n"
        "img/3.png,unsure,P3,e\n",
        encoding="utf-8",
    )
    data = validate(tmp_path / "labels.csv", folds=2, cache=CropCache(tmp_path / "cache"))
    s = data.summary
    assert s.mixed_patients == ["P1"]
    assert s.patients_per_class == [2, 2] and s.n_patients == 3
    assert any("unknown label 'unsure'" in u["reason"] for u in s.unlabelled)
    assert sorted(data.patients) == ["P1", "P1", "P2", "P3"]


def test_csv_without_path_column_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("image,diagnosis\na.png,normal\n", encoding="utf-8")
    with pytest.raises(TrainingDataError, match="'path' and 'label'"):
        discover(tmp_path / "bad.csv")


def test_crops_are_the_inference_crops_and_cached_by_content(tmp_path: Path) -> None:
    from pneumoview.preprocess import prepare

    src = _png(tmp_path / "a.png", 5, sick=True)
    cache = CropCache(tmp_path / "cache", size=224)
    first = cache.prepare(src)
    np.testing.assert_array_equal(first.load_crop(), prepare(src, size=224).crop)
    assert (cache.hits, cache.misses) == (0, 1)
    renamed = tmp_path / "b.png"
    shutil.copy(src, renamed)  # same content, other name: a hit
    again = cache.prepare(renamed)
    assert (cache.hits, cache.misses) == (1, 1) and again.crop_path == first.crop_path
    other_size = CropCache(tmp_path / "cache", size=64).prepare(src)
    assert other_size.crop_path != first.crop_path and other_size.load_crop().shape == (64, 64)
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_rerun_does_not_decode_again(folder_data: Path, tmp_path: Path) -> None:
    validate(folder_data, folds=2, cache=CropCache(tmp_path / "cache"))
    second = validate(folder_data, folds=2, cache=CropCache(tmp_path / "cache"))
    assert second.summary.cache_misses == 0
    assert second.summary.cache_hits == 8  # 6 images, the duplicate, and the broken file (its failure is cached)


def test_dicom_patient_id_from_header_and_non_chest_flagged(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    ct = Path(get_testdata_file("CT_small.dcm"))
    root = tmp_path / "d"
    (root / "normal").mkdir(parents=True)
    shutil.copy(ct, root / "normal" / "ct.dcm")
    for i in range(2):
        _png(root / "pneumoconiosis" / f"{i}.png", i, sick=True)
        _png(root / "normal" / f"{i}.png", 10 + i, sick=False)
    samples, _ = discover(root)
    ct_sample = next(s for s in samples if s.path.name == "ct.dcm")
    import pydicom

    assert ct_sample.patient_id == str(pydicom.dcmread(ct, stop_before_pixels=True).PatientID)
    assert ct_sample.patient_source == "dicom"
    data = validate(root, folds=2, cache=CropCache(tmp_path / "cache"))
    flagged = data.summary.not_frontal
    assert [Path(f["path"]).name for f in flagged] == ["ct.dcm"] and flagged[0]["reason"]
    assert "ct.dcm" not in {s.path.name for s in data.samples}
    kept = validate(root, folds=2, cache=CropCache(tmp_path / "cache"), include_flagged=True)
    assert "ct.dcm" in {s.path.name for s in kept.samples}


@pytest.mark.shared
def test_real_chest_dicom_is_accepted(rg1_uncompressed: Path, tmp_path: Path) -> None:
    cache = CropCache(tmp_path / "cache")
    prepared = cache.prepare(rg1_uncompressed)
    assert prepared.suitability_code is None
    crop = prepared.load_crop()
    assert crop.shape == (224, 224) and crop.dtype == np.float32 and 0 <= crop.min() < crop.max() <= 1
