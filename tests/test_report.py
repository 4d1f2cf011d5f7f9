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
from pneumoview.report import COLUMNS, ExportOptions, ReportRow, column_names, columns_for, export_csv, pseudonym
from pneumoview.results import NOT_ANALYSED, ImageIdentity, Provenance, analysed, failed, identify
from pneumoview.store import ImageInfo, ResultStore

KEY = bytes(range(32))
CLASSES = ("pneumoconiosis", "normal")


def _read(path: Path, delimiter: str = ",") -> list[dict[str, str]]:
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf"), "UTF-8 BOM so Excel detects the encoding"
    return list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline=""), delimiter=delimiter))


def _prov(**kw: object) -> Provenance:
    base: dict = dict(
        bundle_id="20261127-demo-1a2b",
        bundle_name="pneumollm-tiny",
        bundle_fingerprint="f" * 64,
        base_fingerprints={"clip": "c" * 64, "llama": "d" * 64},
        threshold=0.5,
        software_version="0.1.0",
        preprocessing={"image_size": 224},
        crop_box=(1, 2, 300, 400),
        device="cpu",
        plan="cpu fp32",
    )
    base.update(kw)
    return Provenance(**base)


@pytest.fixture
def store(tmp_path: Path):
    with ResultStore(tmp_path / "db.sqlite3") as s:
        yield s


@pytest.fixture
def rg1(store: ResultStore, rg1_uncompressed: Path):
    """RG1 (real chest CR) analysed by a demo model and reviewed."""
    record = read_record(rg1_uncompressed)
    identity = identify(rg1_uncompressed, record.sop_instance_uid)
    result = store.save(
        analysed(
            identity,
            0.8312346,
            class_names=CLASSES,
            demo=True,
            provenance=_prov(),
            analysed_at="2026-11-27T21:10:09.710665Z",
        ),
        ImageInfo.from_record(record, identity),
    )
    decision = store.save_decision(
        identity.key,
        "disagree",
        'Zoë: see =1+1, "old" TB scar',
        "Dr. Ørsted",
        reviewed_at="2026-11-27T21:30:00.000001Z",
    )
    return record, result, decision


def test_every_column_of_a_real_dicom_row(tmp_path: Path, store: ResultStore, rg1, rg1_uncompressed: Path) -> None:
    _record, result, _decision = rg1
    ds = pydicom.dcmread(rg1_uncompressed, stop_before_pixels=True)
    out = tmp_path / "report.csv"
    summary = export_csv(out, store.report_rows(), ExportOptions(include_names=True))
    assert summary.rows == 1
    rows = _read(out)
    assert tuple(rows[0]) == column_names() == summary.columns
    row = rows[0]
    assert row["patient_id"] == ds.PatientID == "9RG1"
    assert row["patient_name"] == "CompressedSamples RG1"  # PN "CompressedSamples^RG1"
    assert row["study_uid"] == ds.StudyInstanceUID
    assert row["accession"] == ds.AccessionNumber == "exam Number"
    assert row["study_date"] == "2004-08-26" and ds.StudyDate == "20040826"
    assert row["view_position"] == ds.ViewPosition == "PA"
    assert row["sop_instance_uid"] == ds.SOPInstanceUID and row["content_sha256"] == result.image.content_sha256
    assert row["path"] == str(rg1_uncompressed.absolute())
    assert row["status"] == "analysed" and row["reason_code"] == "" and row["duplicate_uid"] == ""
    assert row["probability"] == "0.831235"
    assert row["threshold"] == "0.5"
    assert row["label"] == f"{DEMO_MARK}: pneumoconiosis" == "DEMO - not a diagnosis: pneumoconiosis"
    assert row["demo"] == "yes"
    assert row["model_name"] == "pneumollm-tiny" and row["model_id"] == "20261127-demo-1a2b"
    assert row["model_fingerprint"] == "f" * 64
    assert row["base_fingerprints"] == f"clip={'c' * 64} llama={'d' * 64}"
    assert row["software_version"] == "0.1.0" and row["device_plan"] == "cpu fp32"
    assert row["lung_box"] == "1 2 300 400" and row["lung_fallback"] == "no"
    assert row["decision"] == "disagree" and row["review_status"] == "current"
    assert row["comment"] == 'Zoë: see =1+1, "old" TB scar'  # quotes + comma survive the CSV round trip
    assert row["reviewer"] == "Dr. Ørsted"
    assert row["analysed_at"] == "2026-11-27 21:10:09"
    assert row["reviewed_at"] == "2026-11-27 21:30:00"
    assert out.read_bytes().count(b"\r\n") == 2  # header + 1 row, CRLF like Excel writes


def test_names_are_opt_in_and_source_path_can_be_left_out(tmp_path: Path, store: ResultStore, rg1) -> None:
    out = tmp_path / "r.csv"
    summary = export_csv(out, store.report_rows(), ExportOptions(include_source_path=False))
    text = out.read_bytes().decode("utf-8-sig")
    assert "patient_name" not in summary.columns and "path" not in summary.columns
    assert "CompressedSamples" not in text and "RG1_UNCR" not in text
    assert "9RG1" in text  # patient ID still there: it was not pseudonymised


def test_pseudonymised_export_holds_no_identifiers(
    tmp_path: Path, store: ResultStore, rg1, rg1_uncompressed: Path
) -> None:
    record, _result, _decision = rg1
    out = tmp_path / "p.csv"
    export_csv(out, store.report_rows(), ExportOptions(pseudonymise=True, key=KEY, include_names=True))
    text = out.read_bytes().decode("utf-8-sig")
    for secret in (
        record.patient_id,
        "CompressedSamples",
        record.study_uid,
        record.accession,
        record.sop_instance_uid,
        str(rg1_uncompressed.parent),
        "RG1_UNCR",
        "Zoë",
    ):
        assert secret not in text, f"{secret!r} leaked into a pseudonymised export"
    row = _read(out)[0]
    assert row["patient_id"] == pseudonym(KEY, "9RG1") and row["patient_id"].startswith("P-")
    assert len(row["patient_id"]) == 2 + 16
    assert row["study_uid"].startswith("S-") and row["accession"].startswith("A-")
    assert "patient_name" not in row and "path" not in row and "comment" not in row
    assert row["decision"] == "disagree" and row["study_date"] == "2004-08-26"


def test_pseudonyms_are_stable_per_key_and_differ_between_keys() -> None:
    assert pseudonym(KEY, "9RG1") == pseudonym(KEY, "9RG1")
    assert pseudonym(KEY, "9RG1") != pseudonym(b"another key", "9RG1")
    assert pseudonym(KEY, "9RG1") != pseudonym(KEY, "9RG2")
    assert pseudonym(KEY, "1.2.3", kind="patient")[2:] != pseudonym(KEY, "1.2.3", kind="study")[2:]
    assert pseudonym(KEY, "") == ""


def test_selected_export_contains_only_the_selection(tmp_path: Path, store: ResultStore, rg1, rg1_j2k: Path) -> None:
    other = ImageIdentity("1.2.999", "9" * 64, "/other/SMITH_JOHN/img.dcm")
    store.save(
        analysed(other, 0.1, class_names=CLASSES, demo=False, provenance=_prov()),
        ImageInfo(
            image_key=other.key,
            path=other.path,
            sop_instance_uid=other.sop_instance_uid,
            content_sha256=other.content_sha256,
            patient_id="OTHER-77",
            patient_name="Smith^John",
            study_uid="1.2.999.1",
            accession="ACC-OTHER",
        ),
    )
    j2k = read_record(rg1_j2k)
    j2k_id = identify(rg1_j2k, j2k.sop_instance_uid)
    store.save(
        failed(j2k_id, "lateral-view", "lateral views are not analysed", status=NOT_ANALYSED),
        ImageInfo.from_record(j2k, j2k_id),
    )
    selected = [rg1[1].key, j2k_id.key]
    out = tmp_path / "sel.csv"
    export_csv(out, store.report_rows(selected), ExportOptions(include_names=True))
    text = out.read_bytes().decode("utf-8-sig")
    assert "OTHER-77" not in text and "Smith" not in text and "ACC-OTHER" not in text and "1.2.999" not in text
    rows = _read(out)
    assert len(rows) == 2
    unsupported = next(r for r in rows if r["status"] == "not-analysed")
    assert unsupported["reason_code"] == "lateral-view" and unsupported["reason"] == "lateral views are not analysed"
    assert unsupported["probability"] == "" and unsupported["label"] == "" and unsupported["lung_fallback"] == ""


def test_formula_like_cells_are_neutralised(tmp_path: Path) -> None:
    row = ReportRow(
        path="k",
        patient_id='=HYPERLINK("http://x")',
        patient_name="+Doe",
        accession="-12",
        study_uid="@SUM(A1)",
        comment="\tcmd",
        reviewer="ok",
        status="unreadable",
        reason_code="x",
    )
    out = tmp_path / "f.csv"
    export_csv(out, [row], ExportOptions(include_names=True))
    r = _read(out)[0]
    assert r["patient_id"] == '\'=HYPERLINK("http://x")'
    assert r["patient_name"] == "'+Doe" and r["accession"] == "'-12" and r["study_uid"] == "'@SUM(A1)"
    assert r["comment"] == "'\tcmd" and r["reviewer"] == "ok"


def test_semicolon_delimiter_for_decimal_comma_locales(tmp_path: Path) -> None:
    out = tmp_path / "s.csv"
    export_csv(out, [ReportRow(path="P;1", status="unreadable")], ExportOptions(delimiter=";"))
    assert out.read_bytes().decode("utf-8-sig").splitlines()[1].startswith('"P;1";')
    assert _read(out, ";")[0]["path"] == "P;1"


def test_a_non_utf8_file_name_is_written_byte_for_byte(tmp_path: Path, rg1_uncompressed: Path) -> None:
    name = tmp_path / os.fsdecode(b"scan\xff.dcm")
    name.write_bytes(rg1_uncompressed.read_bytes()[:1000])
    out = tmp_path / "n.csv"
    export_csv(
        out,
        [ReportRow(path=os.fspath(name), status="unreadable", reason_code="unreadable", duplicates=(os.fspath(name),))],
    )
    raw = out.read_bytes()
    assert os.fsencode(name) in raw  # the exact bytes of the name, not a replacement character
    back = raw.decode("utf-8-sig", errors="surrogateescape")
    (row,) = csv.DictReader(io.StringIO(back, newline=""))
    assert Path(row["path"]) == name and Path(row["path"]).is_file()  # lossless: the file is found again


def test_demo_label_is_marked_once() -> None:
    assert display_label("normal", demo=True) == "DEMO - not a diagnosis: normal"
    assert display_label("DEMO - not a diagnosis: normal", demo=True) == "DEMO - not a diagnosis: normal"
    assert display_label("normal", demo=False) == "normal"
    assert (
        display_label("pneumoconiosis - DEMO - not a diagnosis", demo=True) == "DEMO - not a diagnosis: pneumoconiosis"
    )
    assert display_label("", demo=True) == DEMO_MARK


def test_a_failed_export_leaves_the_previous_file_and_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    export_csv(out, [ReportRow(path="a", patient_id="A", status="unreadable")])
    before = out.read_bytes()

    def rows_then_crash():
        yield ReportRow(path="b", patient_id="B", status="unreadable")
        raise RuntimeError("store went away")

    with pytest.raises(RuntimeError):
        export_csv(out, rows_then_crash())
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.csv"]


def test_export_errors(tmp_path: Path) -> None:
    rows = [ReportRow(path="a")]
    with pytest.raises(ExportError, match="secret key"):
        export_csv(tmp_path / "x.csv", rows, ExportOptions(pseudonymise=True))
    with pytest.raises(ExportError, match="does not exist"):
        export_csv(tmp_path / "missing" / "x.csv", rows)
    with pytest.raises(ExportError, match="delimiter"):
        export_csv(tmp_path / "x.csv", rows, ExportOptions(delimiter="|"))
    with pytest.raises(ExportError, match="is a folder"):
        export_csv(tmp_path, rows)
    if os.name == "posix" and os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ExportError, match="cannot write"):
            export_csv(locked / "x.csv", rows)
    assert not (tmp_path / "x.csv").exists()


def test_columns_follow_the_options() -> None:
    all_names = [n for n, _meaning in COLUMNS]
    assert list(columns_for(ExportOptions(include_names=True))) == all_names
    pseudo = columns_for(ExportOptions(pseudonymise=True, key=KEY, include_names=True))
    assert set(all_names) - set(pseudo) == {"patient_name", "path", "comment", "sop_instance_uid", "series_uid"}


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
        [
            "soffice",
            "--headless",
            "--infilter=CSV:44,34,76,1",
            "--convert-to",
            "html",
            str(out),
            "--outdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    header, row = _CellParser((tmp_path / "report.html").read_text(encoding="utf-8", errors="replace")).rows
    assert tuple(text for text, _ in header) == column_names()  # the BOM did not leak into "path"
    cells = dict(zip(column_names(), row))
    assert cells["patient_id"] == ("9RG1", None)
    assert cells["patient_name"][0] == "CompressedSamples RG1"
    assert cells["probability"] == ("0.831235", "0.831235")  # a number, not text
    assert cells["study_date"][1] is not None and cells["analysed_at"][1] is not None  # dates
    assert cells["comment"][0] == 'Zoë: see =1+1, "old" TB scar'
    assert cells["label"][0] == "DEMO - not a diagnosis: pneumoconiosis"
