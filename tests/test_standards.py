"""pneumoview.standards: the clinic's folder of ILO standard images, listed and named from file names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pneumoview.errors import ConfigError
from pneumoview.standards import (
    KIND_LARGE,
    KIND_NORMAL,
    KIND_OTHER,
    KIND_QUAD,
    KIND_SMALL,
    WHERE_TO_SET,
    list_standards,
    standard_name,
)


@pytest.mark.parametrize(
    ("filename", "name", "kind"),
    [
        ("0-0.png", "0/0", KIND_NORMAL),
        ("00.dcm", "0/0", KIND_NORMAL),
        ("Normal.jpg", "0/0", KIND_NORMAL),
        ("1p.png", "1/1 p/p", KIND_SMALL),
        ("2Q.tif", "2/2 q/q", KIND_SMALL),
        ("3r.dcm", "3/3 r/r", KIND_SMALL),
        ("ILO_1-1_pp.png", "1/1 p/p", KIND_SMALL),
        ("std 2-2 q-t.png", "2/2 q/t", KIND_SMALL),
        ("11pp", "1/1 p/p", KIND_SMALL),
        ("07_3_3_u_u.jpeg", "3/3 u/u", KIND_SMALL),
        ("A.png", "A", KIND_LARGE),
        ("large_b.dcm", "B", KIND_LARGE),
        ("LO-C.tiff", "C", KIND_LARGE),
        ("quad_rt.png", "quad rt", KIND_QUAD),
        ("Quad u.png", "quad u", KIND_QUAD),
        ("mystery film.png", "mystery film.png", KIND_OTHER),
        ("4p.png", "4p.png", KIND_OTHER),
        ("1x.png", "1x.png", KIND_OTHER),
    ],
)
def test_names_accepted(filename: str, name: str, kind: str) -> None:
    assert standard_name(filename) == (name, kind)


def _standards_folder(root: Path, shared_data: Path, rg1: Path) -> Path:
    folder = root / "ilo"
    (folder / "films").mkdir(parents=True)
    pictures = sorted((shared_data / "cxr" / "images").glob("*.png"))[:6]
    names = ["2q.png", "1p.png", "quad_rt.png", "01_0-0.png", "A.png", "films/mystery.png"]
    for picture, name in zip(pictures, names, strict=True):
        os.symlink(picture, folder / name)
    os.symlink(rg1, folder / "films" / "B.dcm")
    (folder / "README.txt").write_text("licensed copy, do not share\n", encoding="utf-8")
    return folder


def test_list_a_folder_of_real_images(tmp_path: Path, shared_data: Path, rg1_uncompressed: Path) -> None:
    listed = list_standards(_standards_folder(tmp_path, shared_data, rg1_uncompressed))
    assert [(s.name, s.kind) for s in listed] == [
        ("0/0", KIND_NORMAL),
        ("1/1 p/p", KIND_SMALL),
        ("2/2 q/q", KIND_SMALL),
        ("A", KIND_LARGE),
        ("B", KIND_LARGE),
        ("quad rt", KIND_QUAD),
        ("mystery.png", KIND_OTHER),
    ]
    assert [s.is_dicom for s in listed] == [False, False, False, False, True, False, False]
    assert all(s.known for s in listed[:-1]) and not listed[-1].known


@pytest.mark.parametrize("setting", ["", "   ", None])
def test_no_folder_set_says_where_to_set_it(setting: str | None) -> None:
    with pytest.raises(ConfigError) as caught:
        list_standards(setting)
    assert "No folder of ILO standard radiographs is set" in caught.value.message
    assert WHERE_TO_SET in caught.value.message


def test_missing_or_empty_folder_says_where_to_set_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as missing:
        list_standards(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="holds no DICOM, PNG, JPEG or TIFF") as empty:
        list_standards(tmp_path / "empty")
    assert WHERE_TO_SET in missing.value.message and WHERE_TO_SET in empty.value.message
