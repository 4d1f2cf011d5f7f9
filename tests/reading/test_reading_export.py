"""``pneumoview readings export``: CSV columns, pseudonymisation, formula guard, the one-page PDF."""

from __future__ import annotations

import csv
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from reading_support import add_study

from pneumoview.cli import main
from pneumoview.reading.export import COLUMNS, export_readings_csv
from pneumoview.reading.ilo import PleuralThickening, Reading, normal_reading
from pneumoview.reading.pdf import write_study_pdf
from pneumoview.reading.repository import ReadingRepository
from pneumoview.store import ResultStore

BRIEF_COLUMNS = (
    "study_uid",
    "reader",
    "film_quality",
    "small_opacities",
    "primary_shape",
    "secondary_shape",
    "zones",
    "profusion",
    "large_opacities",
    "pleural_abnormalities",
    "symbols",
    "comments",
    "ai_probability",
    "ai_label",
    "final",
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ResultStore]:
    """A real SQLite results store in a temporary folder (no conftest here: the name would shadow the
    top-level ``conftest`` that other tests import by name)."""
    with ResultStore(tmp_path / "results.sqlite3") as s:
        yield s


POSITIVE = Reading(
    film_quality=2,
    film_quality_reason="scapulae overlap",
    profusion="2/1",
    primary_shape="q",
    secondary_shape="t",
    zones=frozenset({"RU", "LU", "RM"}),
    large_opacities="A",
    plaques=PleuralThickening(sites={"in_profile": frozenset({"L"})}, extent={"L": 2}, width={"L": "b"}),
    symbols=frozenset({"ax", "em"}),
    comments='=HYPERLINK("x") Ann Miner says hi',
)


def _filled(store: ResultStore) -> ReadingRepository:
    repo = ReadingRepository(store)
    add_study(store, "1.2.840.99.1", 0.83, demo=True)
    add_study(store, "1.2.840.99.2", None, patient_id="W-0002")
    for name in ("Ada", "Ben"):
        repo.sign_in(name)
    ai = repo.ai_suggestion("1.2.840.99.1")
    repo.submit("1.2.840.99.1", "Ada", POSITIVE, ai=ai)
    repo.submit("1.2.840.99.1", "Ben", normal_reading(), ai=ai)
    repo.submit("1.2.840.99.2", "Ada", normal_reading())
    return repo


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def test_csv_has_one_row_per_reading_with_the_ilo_columns(store: ResultStore, tmp_path: Path) -> None:
    repo = _filled(store)
    summary = export_readings_csv(tmp_path / "r.csv", repo)
    rows = _read(tmp_path / "r.csv")
    assert summary.rows == 3 == len(rows)
    assert set(BRIEF_COLUMNS) <= set(rows[0]) and tuple(rows[0]) == COLUMNS
    ada = rows[0]
    assert (ada["study_uid"], ada["reader"], ada["patient_id"], ada["study_date"]) == (
        "1.2.840.99.1",
        "Ada",
        "W-0001",
        "2026-03-14",
    )
    assert (ada["film_quality"], ada["small_opacities"], ada["primary_shape"], ada["secondary_shape"]) == (
        "2",
        "yes",
        "q",
        "t",
    )
    assert (ada["zones"], ada["profusion"], ada["large_opacities"], ada["pleural_abnormalities"]) == (
        "RU RM LU",
        "2/1",
        "A",
        "yes",
    )
    assert ada["plaques"] == "chest wall in profile L, extent L2, width Lb"
    assert ada["symbols"] == "ax em"
    assert ada["comments"].startswith("'=HYPERLINK")  # formula guard
    assert (ada["ai_probability"], ada["ai_label"]) == ("0.83", "DEMO - not a diagnosis: pneumoconiosis")
    assert ada["final"] == "needs arbitration"
    ben = rows[1]
    assert (ben["small_opacities"], ben["pleural_abnormalities"], ben["profusion"]) == ("no", "no", "0/0")
    assert rows[2]["ai_probability"] == "" and rows[2]["final"] == "pending"


def test_cli_export_pseudonymised(
    store: ResultStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PNEUMOVIEW_HOME", str(tmp_path / "home"))
    _filled(store)
    out, pdfs = tmp_path / "p.csv", tmp_path / "pdf"
    pdfs.mkdir()
    assert (
        main(
            [
                "readings",
                "export",
                "--csv",
                str(out),
                "--pseudonymise",
                "--pdf",
                str(pdfs),
                "--database",
                str(store.path),
            ]
        )
        == 0
    )
    rows = _read(out)
    assert len(rows) == 3 and "comments" not in rows[0] and "film_quality_reason" not in rows[0]
    assert rows[0]["study_uid"].startswith("S-") and rows[0]["patient_id"].startswith("P-")
    text = out.read_text(encoding="utf-8-sig")
    for identifier in ("W-0001", "1.2.840.99.1", "Miner", "Ann"):
        assert identifier not in text
    assert sorted(p.name for p in pdfs.iterdir()) == sorted(f"{r['study_uid']}.pdf" for r in rows[1:])
    assert "3 reading(s) written" in capsys.readouterr().err


def test_cli_export_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["readings", "export", "--csv", str(tmp_path / "x.csv"), "--database", str(tmp_path / "no.db")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no such results database" in err


def test_pdf_is_one_page_with_the_classification(store: ResultStore, tmp_path: Path) -> None:
    repo = _filled(store)
    path = write_study_pdf(tmp_path / "study.pdf", repo, "1.2.840.99.1")
    data = path.read_bytes()
    assert data.startswith(b"%PDF") and data.count(b"/Type /Page\n") + data.count(b"/Type /Page ") == 1
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) not installed: text not checked")
    text = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True).stdout
    for expected in (
        "ILO classification",
        "Worker Miner Ann (ID W-0001)",
        "Reader Ada",
        "Reader Ben",
        "profusion 2/1",
        "large opacities A",
        "ax (coalescence of small opacities)",
        "Final determination: needs arbitration",
        "not a medical device",
        "AI: consistent with pneumoconiosis, 0.83 at operating point 0.50",
    ):
        assert expected in " ".join(text.split()), expected
    pseudo = write_study_pdf(tmp_path / "p.pdf", repo, "1.2.840.99.1", pseudonymise=True, key=b"k" * 32)
    text = subprocess.run(["pdftotext", str(pseudo), "-"], capture_output=True, text=True, check=True).stdout
    assert "Miner" not in text and "W-0001" not in text and "HYPERLINK" not in text and "Worker P-" in text


def test_cli_rule_file_changes_the_final_column(
    store: ResultStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _filled(store)
    repo.submit("1.2.840.99.2", "Ben", Reading(film_quality=1, profusion="0/1"))  # Ada 0/0, Ben 0/1: both 0
    out = tmp_path / "r.csv"
    assert main(["readings", "export", "--csv", str(out), "--database", str(store.path)]) == 0
    assert {r["final"] for r in _read(out) if r["study_uid"] == "1.2.840.99.2"} == {
        "final (agreement): category 0, large opacities 0"
    }
    rule = tmp_path / "rule.json"
    rule.write_text('{"agree_on": "major", "large_opacities": false}', encoding="utf-8")
    assert main(["readings", "export", "--csv", str(out), "--database", str(store.path), "--rule", str(rule)]) == 0
    assert {r["final"] for r in _read(out) if r["study_uid"] == "1.2.840.99.2"} == {"final (agreement): category 0"}
    rule.write_text('{"agree_on": "exact"}', encoding="utf-8")
    capsys.readouterr()
    assert main(["readings", "export", "--csv", str(out), "--database", str(store.path), "--rule", str(rule)]) == 2
    assert "agree_on must be" in capsys.readouterr().err
