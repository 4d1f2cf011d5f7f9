"""`pneumoview scan FOLDER`: the tree, the problems list, --json, exit codes (through the real CLI)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from pneumoview.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    shutil.copyfile(get_testdata_file("RG1_UNCR.dcm"), tmp_path / "rg1.dcm")
    (tmp_path / "nested").mkdir()
    shutil.copyfile(get_testdata_file("CT_small.dcm"), tmp_path / "nested" / "ct")
    (tmp_path / "nested" / "broken.dcm").write_bytes(b"\x00" * 10)
    return tmp_path


def test_tree_and_problems(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["scan", "--quiet", str(folder)])
    out = capsys.readouterr().out
    assert code == 1  # one unreadable file
    assert "Patient CompressedSamples^RG1" in out and "ID 9RG1" in out
    assert "CR CHEST PA" in out and "diagnosable" in out
    assert "not analysed [unsupported-modality]" in out  # the CT
    assert "Problems:" in out and f"[unreadable] {folder / 'nested' / 'broken.dcm'}" in out
    assert "2 patient(s), 2 study(ies), 2 series, 2 image(s); 1 file(s) without an image" in out


def test_json_output(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["scan", "--json", "-q", str(folder)])
    document = json.loads(capsys.readouterr().out)
    assert code == 1
    assert document["files_seen"] == 3 and document["images"] == 2
    images = [i for p in document["patients"] for s in p["studies"] for se in s["series"] for i in se["images"]]
    by_name = {Path(i["path"]).name: i for i in images}
    assert by_name["rg1.dcm"]["diagnosable"] is True and by_name["rg1.dcm"]["reason_code"] is None
    assert by_name["ct"]["reason_code"] == "unsupported-modality"
    assert [Path(p["path"]).name for p in document["problems"]] == ["broken.dcm"]


def test_clean_folder_exits_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copyfile(get_testdata_file("CT_small.dcm"), tmp_path / "ct.dcm")
    assert main(["scan", "-q", str(tmp_path)]) == 0
    assert "Problems:" not in capsys.readouterr().out


def test_missing_folder_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pneumoview scan: error: no such file or folder") and err.count("\n") == 1
