"""``pneumoview analyze``: real DICOM files, the real demo model, the real CLI entry point."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from pneumoview.cli import main
from pneumoview.commands.analyze import COLUMNS

DEMO_LABEL = "DEMO - not a diagnosis"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """PNEUMOVIEW_HOME for the module: empty settings, the demo model generated once into its cache."""
    root = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PNEUMOVIEW_HOME", str(root))
        yield root


def read_rows(path: Path) -> list[dict[str, str]]:
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")  # UTF-8 BOM: Excel reads the text right
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        return list(reader)


@pytest.fixture()
def mixed_folder(tmp_path, rg1_uncompressed) -> Path:
    """A real chest CR, a real CT, the chest CR with its pixel data cut short, and a text file."""
    folder = tmp_path / "incoming"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "ct.dcm").write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    (folder / "readme.txt").write_text("not an image", encoding="utf-8")
    broken = pydicom.dcmread(rg1_uncompressed)
    broken.PixelData = broken.PixelData[:4096]  # header intact, pixels truncated
    broken.SOPInstanceUID = broken.SOPInstanceUID + ".9"
    broken.save_as(folder / "broken.dcm")
    return folder


def test_demo_run_writes_one_row_per_file_with_reasons(home, mixed_folder, rg1_uncompressed, tmp_path, capsys):
    out = tmp_path / "report.csv"
    code = main(["analyze", str(mixed_folder), str(rg1_uncompressed), "--demo", "--csv", str(out)])
    err = capsys.readouterr().err
    assert code == 1  # some files could not be read / analysed
    assert "analysing" in err  # the progress bar, on stderr
    assert "analysed 1 image(s), 1 not analysed, 1 failed, 1 unreadable" in err
    rows = {Path(r["path"]).name: r for r in read_rows(out)}
    assert set(rows) == {"RG1_UNCR.dcm", "ct.dcm", "broken.dcm", "readme.txt"}
    chest = rows["RG1_UNCR.dcm"]
    assert chest["status"] == "analysed", chest
    assert 0.0 <= float(chest["probability"]) <= 1.0
    assert chest["label"].endswith(DEMO_LABEL) and chest["demo"] == "yes"
    assert chest["modality"] == "CR" and chest["view_position"] == "PA"
    assert len(chest["lung_box"].split()) == 4
    assert chest["patient_name"] == ""  # names are opt-in
    assert rows["ct.dcm"]["status"] == "not-analysed" and rows["ct.dcm"]["reason_code"] == "unsupported-modality"
    assert rows["broken.dcm"]["status"] == "failed" and rows["broken.dcm"]["reason"]
    assert rows["broken.dcm"]["reason_code"].endswith("-error")  # e.g. pixel-decode-error
    assert rows["readme.txt"]["status"] == "unreadable"


def test_all_good_exits_0_and_threshold_decides_the_label(home, rg1_uncompressed, tmp_path, capsys):
    low, high = tmp_path / "low.csv", tmp_path / "high.csv"
    assert main(["analyze", str(rg1_uncompressed), "--demo", "--csv", str(low), "--threshold", "0", "-q"]) == 0
    assert main(["analyze", str(rg1_uncompressed), "--demo", "--csv", str(high), "--threshold", "1", "-q"]) == 0
    (lo,), (hi,) = read_rows(low), read_rows(high)
    assert lo["positive"] == "yes" and lo["label"].startswith("pneumoconiosis")
    assert hi["positive"] == "no" and hi["label"].startswith("normal")
    assert lo["probability"] == hi["probability"]


def test_missing_weights_fail_with_one_line_and_no_csv(home, rg1_uncompressed, tmp_path, capsys):
    from pneumoview.inference.demo import ensure_demo_model

    bundle = ensure_demo_model().bundle  # a valid bundle, but no base weights configured
    out = tmp_path / "never.csv"
    code = main(["analyze", str(rg1_uncompressed), "--model", str(bundle), "--csv", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("pneumoview analyze: error:") and "no CLIP" in err
    assert not out.exists()
    code = main(["analyze", str(rg1_uncompressed), "--model", str(bundle), "--csv", str(out),
                 "--clip", str(tmp_path / "ViT-L-14.pt"), "--llama", str(tmp_path / "llama-7b")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "not found" in err and "ViT-L-14.pt" in err and not out.exists()


def test_missing_folder_fails_with_one_line(home, tmp_path, capsys):
    out = tmp_path / "r.csv"
    assert main(["analyze", str(tmp_path / "absent"), "--demo", "--csv", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no such file or folder" in err and "absent" in err
    assert not out.exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root (or Windows) can read any folder")
def test_unreadable_folder_fails_with_one_line(home, tmp_path, capsys):
    out = tmp_path / "r.csv"
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        assert main(["analyze", str(locked), "--demo", "--csv", str(out)]) == 2
        assert "not readable" in capsys.readouterr().err
    finally:
        locked.chmod(0o755)
    assert not out.exists()


def test_a_failed_run_leaves_an_existing_report_untouched(home, rg1_uncompressed, tmp_path):
    out = tmp_path / "report.csv"
    out.write_text("previous report\n", encoding="utf-8")
    assert main(["analyze", str(rg1_uncompressed), "--model", str(tmp_path / "no-bundle"), "--csv", str(out)]) == 2
    assert out.read_text(encoding="utf-8") == "previous report\n"


def test_pictures_only_when_asked(home, tmp_path):
    from conftest import shared_path

    picture = shared_path("cxr", "images", "16654_1_1.png")
    out = tmp_path / "p.csv"
    assert main(["analyze", str(picture), "--demo", "--csv", str(out), "-q"]) == 1
    (row,) = read_rows(out)
    assert row["status"] == "unreadable"  # not DICOM, and pictures were not asked for
    assert main(["analyze", str(picture), "--demo", "--csv", str(out), "-q", "--include-pictures"]) == 0
    (row,) = read_rows(out)
    assert row["status"] == "analysed" and "suitability not checked" in row["notes"]
    assert row["label"].endswith(DEMO_LABEL)


def test_csv_cells_that_a_spreadsheet_would_evaluate_are_guarded(tmp_path: Path) -> None:
    from pneumoview.commands.analyze import COLUMNS, write_csv

    out = tmp_path / "report.csv"
    write_csv(out, [{"path": "/data/a.dcm", "patient_name": "=HYPERLINK(\"x\")", "patient_id": "+42", "probability": 0.25}])
    with out.open(encoding="utf-8-sig", newline="") as handle:
        row = next(csv.DictReader(handle))
    assert list(row) == list(COLUMNS)
    assert row["patient_name"] == "'=HYPERLINK(\"x\")"
    assert row["patient_id"] == "'+42"
    assert row["probability"] == "0.250000"
    assert row["path"] == "/data/a.dcm"
