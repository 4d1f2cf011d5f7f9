"""Training data discovery on hostile CSVs and folders: one clear error or a listed problem, never a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumoview.errors import TrainingDataError
from pneumoview.labelled_data import CONFLICT, NOT_REGULAR, OUTSIDE, discover


def _png(path: Path, value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((32, 32), value, np.uint8)).save(path)
    return path


def _csv(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"path,label\nimages/caf\xe9.png,normal\n", "not UTF-8 text (byte 0xe9 at offset 21)"),
        (bytes(range(256)) * 8, "not a text file"),
        (b"path\nimages/a.png\n", "CSV needs columns 'path' and 'label' (found: path)"),
        (b"", "CSV needs columns 'path' and 'label' (found: none)"),
    ],
    ids=["latin-1", "binary", "single-column", "empty"],
)
def test_unreadable_csvs_are_one_clear_training_data_error(tmp_path: Path, content: bytes, expected: str) -> None:
    csv_path = _csv(tmp_path / "data" / "labels.csv", content)
    with pytest.raises(TrainingDataError) as info:
        discover(csv_path)
    assert expected in info.value.message
    assert info.value.path == csv_path


def test_a_utf8_csv_with_bom_and_semicolons_is_read(tmp_path: Path) -> None:
    _png(tmp_path / "data" / "images" / "café.png")
    csv_path = _csv(
        tmp_path / "data" / "labels.csv", "\ufeffpath;label;patient_id\nimages/café.png;normal;P1\n".encode()
    )
    samples, problems = discover(csv_path)
    assert [(s.path.name, s.label, s.patient_id) for s in samples] == [("café.png", 1, "P1")]
    assert problems == []


def test_paths_outside_the_csv_folder_are_left_out_unless_allowed(tmp_path: Path) -> None:
    inside = _png(tmp_path / "data" / "in.png")
    outside = _png(tmp_path / "elsewhere" / "out.png", 30)
    csv_path = _csv(
        tmp_path / "data" / "labels.csv",
        f"path,label\nin.png,normal\n../elsewhere/out.png,sick\n/etc/passwd,sick\n{outside},sick\n".encode(),
    )
    samples, problems = discover(csv_path)
    assert [s.path for s in samples] == [inside]
    assert [p.kind for p in problems] == [OUTSIDE, OUTSIDE, OUTSIDE]
    assert "line 3" in problems[0].reason and "--allow-outside" in problems[0].reason
    samples, problems = discover(csv_path, allow_outside=True)
    # Allowed by place; /etc/passwd is then only a candidate image that decoding rejects as unreadable.
    assert {s.path.resolve() for s in samples} == {inside.resolve(), outside.resolve(), Path("/etc/passwd")}
    assert problems == []


def test_a_symlink_out_of_the_folder_counts_as_outside(tmp_path: Path) -> None:
    target = _png(tmp_path / "secret" / "x.png")
    link = tmp_path / "data" / "link.png"
    link.parent.mkdir(parents=True)
    link.symlink_to(target)
    csv_path = _csv(tmp_path / "data" / "labels.csv", b"path,label\nlink.png,normal\n")
    with pytest.raises(TrainingDataError, match="no labelled images"):
        discover(csv_path)


def test_the_same_file_twice_with_conflicting_labels_is_a_conflict_and_same_label_trains_once(tmp_path: Path) -> None:
    _png(tmp_path / "data" / "a.png")
    _png(tmp_path / "data" / "b.png", 20)
    _png(tmp_path / "data" / "c.png", 40)
    csv_path = _csv(
        tmp_path / "data" / "labels.csv",
        b"path,label,patient_id\na.png,normal,1\n./a.png,sick,1\nb.png,sick,2\nb.png,sick,2\nc.png,normal,3\n",
    )
    samples, problems = discover(csv_path)
    assert sorted(s.path.name for s in samples) == ["b.png", "c.png"]
    assert [(p.kind, p.path.name) for p in problems] == [(CONFLICT, "a.png")]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_fifos_and_devices_are_not_regular_files_and_never_opened(tmp_path: Path) -> None:
    _png(tmp_path / "data" / "normal" / "a.png")
    _png(tmp_path / "data" / "pneumoconiosis" / "b.png", 20)
    os.mkfifo(tmp_path / "data" / "normal" / "pipe.png")
    csv_path = _csv(
        tmp_path / "data" / "labels.csv", b"path,label\nnormal/a.png,normal\nnormal/pipe.png,normal\n/dev/zero,sick\n"
    )
    samples, problems = discover(tmp_path / "data")
    assert sorted(s.path.name for s in samples) == ["a.png", "b.png"]
    assert [(p.kind, p.path.name) for p in problems if p.kind == NOT_REGULAR] == [(NOT_REGULAR, "pipe.png")]
    samples, problems = discover(csv_path, allow_outside=True)
    assert [s.path.name for s in samples] == ["a.png"]
    assert sorted(p.kind for p in problems) == [NOT_REGULAR, NOT_REGULAR]
