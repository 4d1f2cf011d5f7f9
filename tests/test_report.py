"""CSV reports from real DICOM headers through the real store, checked column by column."""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest

from pneumoview.dicom.scan import read_record
from pneumoview.errors import ExportError
from pneumoview.labels import DEMO_MARK, display_label
from pneumoview.report import COLUMNS, ExportOptions, ReportRow, columns_for, export_csv, pseudonym
from pneumoview.store import ImageInfo, ResultStore, model_fields

KEY = bytes(range(32))


def _read(path: Path, delimiter: str = ",") -> list[dict[str, str]]:
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf"), "UTF-8 BOM so Excel detects the encoding"
    return list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline=""), delimiter=delimiter))


@pytest.fixture
def store(tmp_path: Path):
    with ResultStore(tmp_path / "db.sqlite3") as s:
        yield s


@pytest.fixture
def rg1(store: ResultStore, rg1_uncompressed: Path):
    """RG1 (real chest CR) analysed by a demo model and reviewed."""
    record = read_record(rg1_uncompressed)
    manifest = {"name": "pneumollm-tiny", "architecture": "pneumollm-tiny", "model_id": "20261127-demo-1a2b",
                "app_version": "0.1.0", "weights_sha256": "f" * 64}
    fields = model_fields(manifest)
    result = store.save_result(record.sop_instance_uid, image=record, probability=0.8312346, threshold=0.5,
                               label="pneumoconiosis", demo=True, plan="cpu fp32", device="cpu",
                               analysed_at="2026-11-27T21:10:09.710665Z", **fields)
    decision = store.save_decision(record.sop_instance_uid, "disagree", "Zoë: see =1+1, \"old\" TB scar", "Dr. Ørsted",
                                   reviewed_at="2026-11-27T21:30:00.000001Z")
    return record, result, decision


def test_every_column_of_a_real_dicom_row(tmp_path: Path, store: ResultStore, rg1, rg1_uncompressed: Path) -> None:
    record, result, decision = rg1
    ds = pydicom.dcmread(rg1_uncompressed, stop_before_pixels=True)
    out = tmp_path / "report.csv"
    summary = export_csv(out, store.report_rows(), ExportOptions(include_names=True))
    assert summary.rows == 1
    rows = _read(out)
    assert list(rows[0]) == [h for _n, h in COLUMNS] == list(summary.columns)
    row = rows[0]
    assert row["Patient ID"] == ds.PatientID == "9RG1"
    assert row["Patient name"] == "CompressedSamples RG1"  # PN "CompressedSamples^RG1"
    assert row["Study UID"] == ds.StudyInstanceUID
    assert row["Accession number"] == ds.AccessionNumber == "exam Number"
    assert row["Study date"] == "2004-08-26" and ds.StudyDate == "20040826"
    assert row["View"] == ds.ViewPosition == "PA"
    assert row["Source path"] == str(rg1_uncompressed.resolve())
    assert row["Probability of pneumoconiosis"] == "0.831235"
    assert row["Threshold"] == "0.5"
    assert row["Label"] == f"{DEMO_MARK}: pneumoconiosis" == "DEMO - not a diagnosis: pneumoconiosis"
    assert row["Model name"] == "pneumollm-tiny"
    assert row["Model version"] == "20261127-demo-1a2b (PneumoView 0.1.0)"
    assert row["Model fingerprint"] == "f" * 16
    assert row["Reviewer decision"] == "disagree"
    assert row["Reviewer comment"] == "Zoë: see =1+1, \"old\" TB scar"  # quotes + comma survive the CSV round trip
    assert row["Reviewer name"] == "Dr. Ørsted"
    assert row["Analysed at (UTC)"] == "2026-11-27 21:10:09"
    assert row["Reviewed at (UTC)"] == "2026-11-27 21:30:00"
    assert row["Unsupported reason"] == ""
    assert out.read_bytes().count(b"\r\n") == 2  # header + 1 row, CRLF like Excel writes


def test_names_are_opt_in_and_source_path_can_be_left_out(tmp_path: Path, store: ResultStore, rg1) -> None:
    out = tmp_path / "r.csv"
    summary = export_csv(out, store.report_rows(), ExportOptions(include_source_path=False))
    text = out.read_bytes().decode("utf-8-sig")
    assert "Patient name" not in summary.columns and "Source path" not in summary.columns
    assert "CompressedSamples" not in text and "RG1_UNCR" not in text
    assert "9RG1" in text  # patient ID still there: it was not pseudonymised


def test_pseudonymised_export_holds_no_identifiers(tmp_path: Path, store: ResultStore, rg1, rg1_uncompressed: Path) -> None:
    record, _result, _decision = rg1
    out = tmp_path / "p.csv"
    export_csv(out, store.report_rows(), ExportOptions(pseudonymise=True, key=KEY, include_names=True))
    text = out.read_bytes().decode("utf-8-sig")
    for secret in (record.patient_id, "CompressedSamples", record.study_uid, record.accession,
                   str(rg1_uncompressed.parent), "RG1_UNCR", "Zoë"):
        assert secret not in text, f"{secret!r} leaked into a pseudonymised export"
    row = _read(out)[0]
    assert row["Patient ID"] == pseudonym(KEY, "9RG1") and row["Patient ID"].startswith("P-")
    assert len(row["Patient ID"]) == 2 + 16
    assert row["Study UID"].startswith("S-") and row["Accession number"].startswith("A-")
    assert "Patient name" not in row and "Source path" not in row and "Reviewer comment" not in row
    assert row["Reviewer decision"] == "disagree" and row["Study date"] == "2004-08-26"


def test_pseudonyms_are_stable_per_key_and_differ_between_keys() -> None:
    assert pseudonym(KEY, "9RG1") == pseudonym(KEY, "9RG1")
    assert pseudonym(KEY, "9RG1") != pseudonym(b"another key", "9RG1")
    assert pseudonym(KEY, "9RG1") != pseudonym(KEY, "9RG2")
    assert pseudonym(KEY, "1.2.3", kind="patient")[2:] != pseudonym(KEY, "1.2.3", kind="study")[2:]
    assert pseudonym(KEY, "") == ""


def test_selected_export_contains_only_the_selection(tmp_path: Path, store: ResultStore, rg1, rg1_j2k: Path) -> None:
    other = ImageInfo(image_key="1.2.999", path="/other/SMITH_JOHN/img.dcm", patient_id="OTHER-77",
                      patient_name="Smith^John", study_uid="1.2.999.1", accession="ACC-OTHER")
    store.save_result(other.image_key, image=other, probability=0.1, threshold=0.5, label="normal")
    j2k = read_record(rg1_j2k)
    store.save_unsupported(j2k.sop_instance_uid, image=j2k, code="duplicate", reason="same image as RG1_UNCR")
    selected = [rg1[0].sop_instance_uid, j2k.sop_instance_uid]
    out = tmp_path / "sel.csv"
    export_csv(out, store.report_rows(selected), ExportOptions(include_names=True))
    text = out.read_bytes().decode("utf-8-sig")
    assert "OTHER-77" not in text and "Smith" not in text and "ACC-OTHER" not in text and "1.2.999" not in text
    rows = _read(out)
    assert len(rows) == 2
    unsupported = next(r for r in rows if r["Unsupported reason"])
    assert unsupported["Unsupported reason"] == "duplicate: same image as RG1_UNCR"
    assert unsupported["Probability of pneumoconiosis"] == "" and unsupported["Label"] == ""


def test_formula_like_cells_are_neutralised(tmp_path: Path) -> None:
    row = ReportRow(image_key="k", patient_id="=HYPERLINK(\"http://x\")", patient_name="+Doe", accession="-12",
                    study_uid="@SUM(A1)", label="normal", probability=0.25, threshold=0.5, comment="\tcmd", reviewer="ok")
    out = tmp_path / "f.csv"
    export_csv(out, [row], ExportOptions(include_names=True))
    r = _read(out)[0]
    assert r["Patient ID"] == "'=HYPERLINK(\"http://x\")"
    assert r["Patient name"] == "'+Doe" and r["Accession number"] == "'-12" and r["Study UID"] == "'@SUM(A1)"
    assert r["Reviewer comment"] == "'\tcmd" and r["Reviewer name"] == "ok"
    assert r["Probability of pneumoconiosis"] == "0.25"


def test_semicolon_delimiter_for_decimal_comma_locales(tmp_path: Path) -> None:
    out = tmp_path / "s.csv"
    export_csv(out, [ReportRow(image_key="k", patient_id="P;1", label="normal", probability=0.5, threshold=0.5)],
               ExportOptions(delimiter=";"))
    assert out.read_bytes().decode("utf-8-sig").splitlines()[1].startswith('"P;1";')
    assert _read(out, ";")[0]["Patient ID"] == "P;1"


def test_demo_label_is_marked_once() -> None:
    assert display_label("normal", demo=True) == "DEMO - not a diagnosis: normal"
    assert display_label("DEMO - not a diagnosis: normal", demo=True) == "DEMO - not a diagnosis: normal"
    assert display_label("normal", demo=False) == "normal"
    assert display_label("pneumoconiosis - DEMO - not a diagnosis", demo=True) == "DEMO - not a diagnosis: pneumoconiosis"
    assert display_label("", demo=True) == DEMO_MARK


def test_a_failed_export_leaves_the_previous_file_and_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    export_csv(out, [ReportRow(image_key="a", patient_id="A", label="normal", probability=0.1, threshold=0.5)])
    before = out.read_bytes()

    def rows_then_crash():
        yield ReportRow(image_key="b", patient_id="B", label="normal", probability=0.1, threshold=0.5)
        raise RuntimeError("store went away")

    with pytest.raises(RuntimeError):
        export_csv(out, rows_then_crash())
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.csv"]


def test_export_errors(tmp_path: Path) -> None:
    rows = [ReportRow(image_key="a")]
    with pytest.raises(ExportError, match="secret key"):
        export_csv(tmp_path / "x.csv", rows, ExportOptions(pseudonymise=True))
    with pytest.raises(ExportError, match="does not exist"):
        export_csv(tmp_path / "missing" / "x.csv", rows)
    with pytest.raises(ExportError, match="delimiter"):
        export_csv(tmp_path / "x.csv", rows, ExportOptions(delimiter="|"))
    if os.name == "posix" and os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ExportError, match="cannot write"):
            export_csv(locked / "x.csv", rows)
    assert not (tmp_path / "x.csv").exists()


def test_columns_follow_the_options() -> None:
    all_names = [n for n, _h in COLUMNS]
    assert [n for n, _h in columns_for(ExportOptions(include_names=True))] == all_names
    pseudo = [n for n, _h in columns_for(ExportOptions(pseudonymise=True, key=KEY, include_names=True))]
    assert set(all_names) - set(pseudo) == {"patient_name", "source_path", "comment"}


class _CellParser:
    """Cells of LibreOffice's HTML export: (text, sdval) per <td>, row by row."""

    def __init__(self, html: str) -> None:
        from html.parser import HTMLParser

        rows: list[list[tuple[str, str | None]]] = []

        class P(HTMLParser):
            cell: list[str] | None = None
            sdval: str | None = None

            def handle_starttag(self, tag, attrs):
                if tag == "tr":
                    rows.append([])
                elif tag == "td":
                    self.cell, self.sdval = [], dict(attrs).get("sdval")
                elif tag == "br" and self.cell is not None:
                    self.cell.append("\n")

            def handle_endtag(self, tag):
                if tag == "td" and self.cell is not None:
                    rows[-1].append(("".join(self.cell).strip("\n") if "".join(self.cell).strip() else "", self.sdval))
                    self.cell = None

            def handle_data(self, data):
                if self.cell is not None:
                    self.cell.append(data)

        P().feed(html)
        self.rows = rows


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("soffice") is None, reason="needs LibreOffice (soffice) installed")
def test_libreoffice_calc_reads_the_export(tmp_path: Path, store: ResultStore, rg1) -> None:
    out = tmp_path / "report.csv"
    export_csv(out, store.report_rows(), ExportOptions(include_names=True))
    env = {**os.environ, "HOME": str(tmp_path)}  # a private LibreOffice profile
    proc = subprocess.run(
        ["soffice", "--headless", "--infilter=CSV:44,34,76,1", "--convert-to", "html", str(out), "--outdir", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    header, row = _CellParser((tmp_path / "report.html").read_text(encoding="utf-8", errors="replace")).rows
    assert [text for text, _ in header] == [h for _n, h in COLUMNS]  # the BOM did not leak into "Patient ID"
    cells = dict(zip([h for _n, h in COLUMNS], row))
    assert cells["Patient ID"] == ("9RG1", None)
    assert cells["Patient name"][0] == "CompressedSamples RG1"
    assert cells["Probability of pneumoconiosis"] == ("0.831235", "0.831235")  # a number, not text
    assert cells["Study date"][1] is not None and cells["Analysed at (UTC)"][1] is not None  # dates
    assert cells["Reviewer comment"][0] == "Zoë: see =1+1, \"old\" TB scar"
    assert cells["Label"][0] == "DEMO - not a diagnosis: pneumoconiosis"
