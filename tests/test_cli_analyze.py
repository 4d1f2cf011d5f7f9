"""``pneumoview analyze``: real DICOM files, the real demo model, the real CLI entry point."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from pneumoview.cli import main
from pneumoview.labels import DEMO_MARK
from pneumoview.report import ExportOptions, column_names, columns_for, pseudonym


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """PNEUMOVIEW_HOME for the module: empty settings, the demo model generated once into its cache."""
    root = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PNEUMOVIEW_HOME", str(root))
        yield root


def read_rows(path: Path, options: ExportOptions | None = None) -> list[dict[str, str]]:
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")  # UTF-8 BOM: Excel reads the text right
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == columns_for(options or ExportOptions())  # the app's schema
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
    assert chest["label"].startswith(DEMO_MARK) and chest["demo"] == "yes"
    assert chest["modality"] == "CR" and chest["view_position"] == "PA"
    assert len(chest["lung_box"].split()) == 4 and chest["model_fingerprint"] and chest["software_version"]
    assert "patient_name" not in chest  # names are opt-in
    assert rows["ct.dcm"]["status"] == "not-analysed" and rows["ct.dcm"]["reason_code"] == "unsupported-modality"
    assert rows["broken.dcm"]["status"] == "failed" and rows["broken.dcm"]["reason"]
    assert rows["broken.dcm"]["reason_code"].endswith("-error")  # e.g. pixel-decode-error
    assert rows["readme.txt"]["status"] == "unreadable"


def test_all_good_exits_0_and_threshold_decides_the_label(home, rg1_uncompressed, tmp_path, capsys):
    low, high = tmp_path / "low.csv", tmp_path / "high.csv"
    assert main(["analyze", str(rg1_uncompressed), "--demo", "--csv", str(low), "--threshold", "0", "-q"]) == 0
    assert main(["analyze", str(rg1_uncompressed), "--demo", "--csv", str(high), "--threshold", "1", "-q"]) == 0
    (lo,), (hi,) = read_rows(low), read_rows(high)
    assert lo["label"] == f"{DEMO_MARK}: pneumoconiosis" and lo["threshold"] == "0"
    assert hi["label"] == f"{DEMO_MARK}: normal" and hi["threshold"] == "1"
    assert lo["probability"] == hi["probability"]


def test_missing_weights_fail_with_one_line_and_no_csv(home, rg1_uncompressed, tmp_path, capsys):
    from bundle_support import make_tiny_bundle

    bundle = make_tiny_bundle(tmp_path / "bundle")  # a valid bundle, but no base weights configured
    out = tmp_path / "never.csv"
    code = main(["analyze", str(rg1_uncompressed), "--model", str(bundle), "--csv", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("pneumoview analyze: error:") and "no CLIP" in err
    assert not out.exists()
    code = main(
        [
            "analyze",
            str(rg1_uncompressed),
            "--model",
            str(bundle),
            "--csv",
            str(out),
            "--clip",
            str(tmp_path / "ViT-L-14.pt"),
            "--llama",
            str(tmp_path / "llama-7b"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no such file" in err and "ViT-L-14.pt" in err and not out.exists()


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


def test_pictures_only_when_asked(home, tmp_path, shared_data):
    picture = shared_data / "cxr" / "images" / "16654_1_1.png"
    out = tmp_path / "p.csv"
    assert main(["analyze", str(picture), "--demo", "--csv", str(out), "-q"]) == 1
    (row,) = read_rows(out)
    assert row["status"] == "unreadable"  # not DICOM, and pictures were not asked for
    assert main(["analyze", str(picture), "--demo", "--csv", str(out), "-q", "--include-pictures"]) == 0
    (row,) = read_rows(out)
    assert row["status"] == "analysed" and "suitability not checked" in row["notes"]
    assert row["label"].startswith(DEMO_MARK)


def test_an_image_the_localiser_cannot_take_is_a_row_not_an_abort(home, tmp_path):
    """Issue 9: a 1-pixel-high picture raised ValueError in the lung localiser and killed the run."""
    from PIL import Image

    folder = tmp_path / "pics"
    folder.mkdir()
    Image.new("L", (50, 1), 128).save(folder / "thin.png")
    out = tmp_path / "t.csv"
    assert main(["analyze", str(folder), "--demo", "--csv", str(out), "-q", "--include-pictures"]) == 0
    (row,) = read_rows(out)  # the localiser falls back to the whole image and says so
    assert row["status"] == "analysed" and row["lung_fallback"] == "yes" and row["label"].startswith(DEMO_MARK)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--threshold", "nan"], "--threshold"),
        (["--threshold", "1.5"], "--threshold"),
        (["--threshold", "inf"], "--threshold"),
        (["--batch-size", "0"], "--batch-size"),
        (["--csv-is-folder"], "is a folder"),
        (["--csv-in-missing-folder"], "does not exist"),
    ],
)
def test_cheap_arguments_are_refused_before_any_model_loads(home, rg1_uncompressed, tmp_path, capsys, args, words):
    out = tmp_path / "r.csv"
    if args == ["--csv-is-folder"]:
        args, out = [], tmp_path
    elif args == ["--csv-in-missing-folder"]:
        args, out = [], tmp_path / "missing" / "r.csv"
    # A bundle that does not exist: had the model been loaded first, the error would be about the bundle.
    code = main(["analyze", str(rg1_uncompressed), "--model", str(tmp_path / "no-bundle"), "--csv", str(out), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and words in err, err
    assert "no-bundle" not in err and not (tmp_path / "r.csv").exists()


def test_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit) as done:
        main(["analyze", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "exit status" in text and "--pseudonymise" in text
    for line in (
        "0  every readable image was analysed",
        "1  some files could not be read or analysed",
        "2  could not start",
    ):
        assert line in text


@pytest.mark.slow
def test_a_non_utf8_file_name_is_analysed_and_written_losslessly(home, rg1_uncompressed, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    name = folder / os.fsdecode(b"rg1-\xff.dcm")  # byte 0xff: not UTF-8
    name.write_bytes(rg1_uncompressed.read_bytes())
    out = tmp_path / "r.csv"
    assert main(["analyze", str(folder), "--demo", "--csv", str(out), "-q"]) == 0
    assert os.fsencode(name) in out.read_bytes()
    (row,) = read_rows(out)
    assert row["status"] == "analysed" and Path(row["path"]) == name and Path(row["path"]).is_file()


@pytest.mark.slow
def test_files_sharing_a_uid_each_get_their_own_row_and_the_conflict(home, rg1_uncompressed, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.dcm").write_bytes(rg1_uncompressed.read_bytes())
    (folder / "copy.dcm").write_bytes(rg1_uncompressed.read_bytes())
    (folder / "cut.dcm").write_bytes(rg1_uncompressed.read_bytes()[:2_000_000])  # same UID, pixels cut short
    out = tmp_path / "r.csv"
    assert main(["analyze", str(folder), "--demo", "--csv", str(out), "-q"]) == 1
    rows = {Path(r["path"]).name: r for r in read_rows(out)}
    assert set(rows) == {"good.dcm", "copy.dcm", "cut.dcm"}
    assert rows["good.dcm"]["status"] == rows["copy.dcm"]["status"] == "analysed"
    assert rows["cut.dcm"]["status"] == "failed" and rows["cut.dcm"]["probability"] == ""  # no inherited score
    assert rows["cut.dcm"]["label"] == "" and rows["cut.dcm"]["content_sha256"] != rows["good.dcm"]["content_sha256"]
    for name, row in rows.items():
        assert row["duplicate_uid"].startswith("duplicate-uid: ")
        others = {Path(p).name for p in row["duplicate_uid"].removeprefix("duplicate-uid: ").split("; ")}
        assert others == set(rows) - {name}


@pytest.mark.slow
def test_pseudonymise_uses_the_apps_rules(home, rg1_uncompressed, tmp_path):
    from pneumoview.settings import load_settings

    out = tmp_path / "p.csv"
    assert (
        main(["analyze", str(rg1_uncompressed), "--demo", "--csv", str(out), "-q", "--pseudonymise", "--include-names"])
        == 0
    )
    key = bytes.fromhex(load_settings().pseudonymise_key)  # the app's key, created once and kept
    (row,) = read_rows(out, ExportOptions(pseudonymise=True, key=key, include_names=True))
    text = out.read_bytes().decode("utf-8-sig")
    ds = pydicom.dcmread(rg1_uncompressed, stop_before_pixels=True)
    for secret in (ds.PatientID, "CompressedSamples", ds.StudyInstanceUID, ds.SOPInstanceUID, "RG1_UNCR"):
        assert secret not in text
    assert row["patient_id"] == pseudonym(key, ds.PatientID) and row["status"] == "analysed"
    assert set(column_names()) - set(row) == {"path", "patient_name", "comment", "sop_instance_uid", "series_uid"}


def test_without_model_options_analyze_runs_what_the_app_would(home, rg1_uncompressed, tmp_path, capsys):
    """The demo choice recorded by ``models use-demo`` (or the app) is what ``analyze`` runs without options."""
    from pneumoview.registry import ModelRegistry

    out = tmp_path / "chosen.csv"
    assert main(["models", "use-demo"]) == 0
    try:
        assert main(["analyze", str(rg1_uncompressed), "--csv", str(out), "-q"]) == 0
    finally:
        ModelRegistry().leave_demo()
    (row,) = read_rows(out)
    assert row["demo"] == "yes" and row["label"].startswith(DEMO_MARK)


@pytest.mark.slow
def test_quality_codes_and_the_below_gate_mark_in_the_csv_at_the_settings_thresholds(
    home, rg1_uncompressed, shared_data, tmp_path, monkeypatch
):
    """The gate's codes per image (real RG1, pydicom edits of it, a real PNG with the apices cut off);
    below-gate results are analysed and marked, never dropped; the settings' ``quality`` thresholds apply."""
    from quality_support import quality_edits

    from pneumoview.settings import Settings, save_settings

    folder = tmp_path / "in"
    quality_edits(folder, rg1_uncompressed)
    (folder / "ARDSSevere.png").write_bytes((shared_data / "cxr" / "images" / "ARDSSevere.png").read_bytes())
    out = tmp_path / "q.csv"
    assert main(["analyze", str(folder), "--demo", "--include-pictures", "--csv", str(out), "-q"]) == 0
    rows = {Path(r["path"]).name: r for r in read_rows(out)}
    cells = {name: (r["status"], r["quality_codes"], r["below_quality_gate"]) for name, r in rows.items()}
    assert cells == {
        "rg1.dcm": ("analysed", "pixel-spacing-unknown", "no"),
        "coarse.dcm": ("analysed", "pixel-spacing-coarse", "yes"),
        "ap.dcm": ("analysed", "pixel-spacing-unknown;ap-view", "no"),
        "cut.dcm": ("analysed", "pixel-spacing-unknown;lungs-cut-off", "yes"),
        "lateral.dcm": ("not-analysed", "", ""),  # never reaches the gate: the view is refused first
        "ARDSSevere.png": ("analysed", "pixel-spacing-unknown;lungs-cut-off", "yes"),
    }
    assert rows["lateral.dcm"]["reason_code"] == "lateral-view"
    assert all(rows[n]["probability"] for n in ("coarse.dcm", "cut.dcm", "ARDSSevere.png"))  # marked, not dropped
    # The same gate with the clinic's own thresholds (settings "quality"), as the app uses them.
    monkeypatch.setenv("PNEUMOVIEW_HOME", str(tmp_path / "home2"))
    save_settings(Settings(quality={"max_pixel_spacing_mm": 2.0, "edge_tolerance": 0.0}))
    relaxed = tmp_path / "relaxed.csv"
    assert main(["analyze", str(folder / "coarse.dcm"), "--demo", "--csv", str(relaxed), "-q"]) == 0
    (row,) = read_rows(relaxed)
    assert (row["quality_codes"], row["below_quality_gate"]) == ("", "no")
