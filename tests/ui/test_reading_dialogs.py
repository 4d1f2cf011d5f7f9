"""Reading dialogs over a real SQLite store (pytest-qt): sign-in, blinding, the final-determination
rule as the reader sees it, the arbitration queue, the agreement dashboard and the menu table."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtWidgets import QMainWindow

from pneumoview.reading.ilo import Reading, normal_reading
from pneumoview.reading.repository import ReadingRepository
from pneumoview.store import ResultStore
from pneumoview.ui.agreement_dialog import AgreementDialog
from pneumoview.ui.reading_dialogs import (
    READING_MENU,
    ArbitrationQueueDialog,
    ReaderSignInDialog,
    ReadingDialog,
    ReadingMenuController,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reading"))
from reading_support import add_study

POSITIVE = Reading(film_quality=1, profusion="1/1", primary_shape="q", secondary_shape="q", zones=frozenset({"RU"}))


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[ReadingRepository]:
    with ResultStore(tmp_path / "r.sqlite3") as store:
        add_study(store, "s1", 0.83)
        add_study(store, "s2", 0.2)
        yield ReadingRepository(store)


def test_sign_in_refuses_an_empty_name_and_registers_a_new_reader(qtbot, repo: ReadingRepository) -> None:
    dialog = ReaderSignInDialog(repo)
    qtbot.addWidget(dialog)
    dialog.name.setCurrentText("   ")
    dialog.accept()
    assert dialog.result() == 0 and "name" in dialog.error.text()
    dialog.name.setCurrentText("  Ada   Okafor")
    dialog.accept()
    assert dialog.reader == "Ada Okafor" and repo.readers() == ["Ada Okafor"]


def test_blinding_and_final_determination_in_the_reading_dialog(qtbot, repo: ReadingRepository) -> None:
    for name in ("Ada", "Ben"):
        repo.sign_in(name)
    repo.submit("s1", "Ada", POSITIVE)
    dialog = ReadingDialog(repo, "s1", "Ben")
    qtbot.addWidget(dialog)
    assert "Hidden until you submit" in dialog.others.toPlainText()
    assert "Ada" not in dialog.others.toPlainText() and dialog.final.text() == ""
    assert dialog.form.reading() == Reading(film_quality=1)  # Ada's form is not pre-filled either
    assert dialog.form.ai_label.text() == "AI: consistent with pneumoconiosis, 0.83 at operating point 0.50"
    saved = []
    dialog.saved.connect(saved.append)
    dialog.form.fill_normal()
    assert dialog.form.submit()
    assert len(saved) == 1 and saved[0].reading == normal_reading()  # the AI's 0.83 did not leak in
    assert "Ada" in dialog.others.toPlainText() and "profusion 1/1" in dialog.others.toPlainText()
    assert dialog.final.text() == "Final determination: needs arbitration"


def test_arbitration_queue_and_the_third_reader(qtbot, repo: ReadingRepository) -> None:
    for name in ("Ada", "Ben", "Cy"):
        repo.sign_in(name)
    repo.submit("s1", "Ada", POSITIVE)
    repo.submit("s1", "Ben", normal_reading())
    repo.submit("s2", "Ada", normal_reading())
    repo.submit("s2", "Ben", normal_reading())
    queue = ArbitrationQueueDialog(repo, "Cy")
    qtbot.addWidget(queue)
    assert queue.study_uids() == ["s1"]
    assert ArbitrationQueueDialog(repo, "Ada").study_uids() == []
    with qtbot.waitSignal(queue.chosen) as blocker:
        queue.list.itemActivated.emit(queue.list.item(0))
    assert blocker.args == ["s1"]
    dialog = ReadingDialog(repo, "s1", "Cy")
    qtbot.addWidget(dialog)
    dialog.form.set_reading(POSITIVE)
    assert dialog.form.submit()
    assert dialog.final.text() == "Final determination: final (arbitration): category 1+, large opacities 0"
    late = ReadingDialog(repo, "s2", "Cy")  # s2 is final by agreement: a new reader is refused
    qtbot.addWidget(late)
    late.form.fill_normal()
    late.form.submit()
    assert "final determination" in late.form.messages.text()


def test_agreement_dashboard_shows_the_kappas(qtbot, repo: ReadingRepository) -> None:
    for name in ("Ada", "Ben"):
        repo.sign_in(name)
    repo.submit("s1", "Ada", POSITIVE)
    repo.submit("s1", "Ben", POSITIVE)
    repo.submit("s2", "Ada", normal_reading())
    repo.submit("s2", "Ben", normal_reading())
    dialog = AgreementDialog.from_repository(repo)
    qtbot.addWidget(dialog)
    rows = {
        (dialog.summary.item(r, 0).text(), dialog.summary.item(r, 1).text()): r
        for r in range(dialog.summary.rowCount())
    }
    assert set(rows) == {("Ada", "Ben"), ("Ada", "AI"), ("Ben", "AI")}
    # Ada vs Ben: 1-1 and 0-0 -> p_o = 1, p_e = 0.5*0.5 + 0.5*0.5 = 0.5 -> kappa 1
    assert dialog.summary.item(rows[("Ada", "Ben")], 4).text() == "1.000"
    # Ada vs AI: Ada 1+ / 0, AI 0.83 -> 1+, 0.2 -> 0: also perfect
    assert dialog.summary.item(rows[("Ada", "AI")], 4).text() == "1.000"
    dialog.summary.selectRow(rows[("Ada", "Ben")])
    assert dialog.major.item(1, 1).text() == "1" and dialog.major.item(0, 0).text() == "1"
    assert dialog.profusion.item(4, 4).text() == "1"  # 1/1 vs 1/1
    assert len(dialog.figure.axes) == 1 and len(dialog.figure.axes[0].patches) == 9  # 3 pairs x 3 kappas


def test_menu_is_a_data_table_installed_on_a_window(qtbot, repo: ReadingRepository) -> None:
    window = QMainWindow()
    qtbot.addWidget(window)
    controller = ReadingMenuController(window, lambda: repo, lambda: "s1")
    menu = controller.install(window)
    assert [a.text() for a in menu.actions()] == [e.text for e in READING_MENU]
    assert all(hasattr(controller, e.action) for e in READING_MENU)
    controller.reader = repo.sign_in("Ada")
    dialog = controller.read_selected()
    assert dialog is not None and dialog.study_uid == "s1" and dialog.reader == "Ada"
    dialog.close()


def test_export_dialog_writes_the_ilo_columns(qtbot, repo: ReadingRepository, tmp_path: Path) -> None:
    import csv

    from pneumoview.reading.export import COLUMNS
    from pneumoview.ui.reading_dialogs import ExportReadingsDialog

    repo.sign_in("Ada")
    repo.submit("s1", "Ada", POSITIVE, ai=repo.ai_suggestion("s1"))
    dialog = ExportReadingsDialog(repo, lambda: b"k" * 32)
    qtbot.addWidget(dialog)
    dialog.accept()
    assert "choose the CSV" in dialog.error.text()
    out, pdfs = tmp_path / "readings.csv", tmp_path / "pdf"
    pdfs.mkdir()
    dialog.csv_path.setText(str(out))
    dialog.pdf_dir.setText(str(pdfs))
    dialog.pseudonymise.setChecked(True)
    dialog.accept()
    assert dialog.result() == 1 and dialog.summary is not None and dialog.summary.rows == 1
    with out.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == tuple(c for c in COLUMNS if c not in ("film_quality_reason", "comments"))
    row = rows[0]
    assert (row["reader"], row["profusion"], row["small_opacities"], row["zones"], row["ai_probability"]) == (
        "Ada",
        "1/1",
        "yes",
        "RU",
        "0.83",
    )
    assert row["study_uid"].startswith("S-") and row["patient_id"].startswith("P-")
    assert [p.suffix for p in pdfs.iterdir()] == [".pdf"]


def test_plain_enter_in_the_dialog_does_not_submit(qtbot, repo: ReadingRepository) -> None:
    from PySide6.QtCore import Qt

    repo.sign_in("Ada")
    dialog = ReadingDialog(repo, "s1", "Ada")
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    dialog.activateWindow()
    qtbot.waitUntil(dialog.isActiveWindow)
    dialog.form.fill_normal()
    qtbot.keyClick(dialog.form.quality_reason, Qt.Key.Key_Return)
    assert repo.readings_for("s1") == [] and dialog.isVisible()
    qtbot.keyClick(dialog.form.quality_reason, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert [r.reading for r in repo.readings_for("s1")] == [normal_reading()]


def test_agreement_dashboard_respects_blinding(qtbot, repo: ReadingRepository) -> None:
    for name in ("Ada", "Ben", "Cy"):
        repo.sign_in(name)
    repo.submit("s1", "Ada", POSITIVE)
    repo.submit("s1", "Ben", normal_reading())  # s1 waits for arbitration: not final
    repo.submit("s2", "Ada", normal_reading())
    repo.submit("s2", "Ben", normal_reading())  # s2 final by agreement

    def pairs(reader: str | None) -> dict[tuple[str, str], int]:
        dialog = AgreementDialog.from_repository(repo, reader=reader)
        qtbot.addWidget(dialog)
        return {(p.rater_a, p.rater_b): p.n for p in dialog.pairs}

    assert pairs("Cy")[("Ada", "Ben")] == 1  # Cy, the possible arbiter of s1, sees s2 only
    assert pairs(None)[("Ada", "Ben")] == 1
    assert pairs("Ada")[("Ada", "Ben")] == 2  # Ada has read both
