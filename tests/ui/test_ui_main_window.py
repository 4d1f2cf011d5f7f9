"""The main window, offscreen, with real DICOMs, the real store and the demo model.

Drop a folder -> studies and problems listed; tags panel; filtering; keyboard study navigation;
analysis with the demo model -> scores and DEMO marking; a decision survives closing and reopening;
CSV export checked column by column (plain and pseudonymised).
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication
from ui_support import JUNK_TEXT, JUNK_TRUNCATED, make_study_folder, reviewer_home

from pneumoview.labels import DEMO_MARK
from pneumoview.session import Status
from pneumoview.settings import load_settings
from pneumoview.ui.main_window import MainWindow
from pneumoview.ui.study_model import COL_SCORE, COL_STATUS, KEY_ROLE, KIND_ROLE

pytestmark = pytest.mark.timeout(300)


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return reviewer_home(tmp_path, monkeypatch)


@pytest.fixture()
def folder(tmp_path: Path, rg1_uncompressed: Path, rg1_j2k: Path) -> Path:
    return make_study_folder(tmp_path, rg1_uncompressed, rg1_j2k)


def open_window(qtbot, folder: Path | None = None) -> MainWindow:  # noqa: ANN001
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    if folder is not None:
        with qtbot.waitSignal(window.scanFinished, timeout=60000):
            window.open_paths([folder])
    return window


def drop(window: MainWindow, paths: list[Path]) -> None:
    """Real drag-enter and drop events carrying file URLs, as a file manager sends them."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    enter = QDragEnterEvent(
        QPoint(200, 200), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    )
    QApplication.sendEvent(window, enter)
    assert enter.isAccepted()
    event = QDropEvent(
        QPointF(200, 200), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    )
    QApplication.sendEvent(window, event)
    assert event.isAccepted()


def key_of(window: MainWindow, name: str) -> str:
    return next(k for k, e in window.session.entries.items() if e.path.name == name)


def test_drop_folder_lists_studies_and_problems(qtbot, home: Path, folder: Path) -> None:  # noqa: ANN001
    window = open_window(qtbot)
    with qtbot.waitSignal(window.scanFinished, timeout=60000):
        drop(window, [folder])
    names = sorted(e.path.name for e in window.session.entries.values())
    assert names == ["CT_small.dcm", "RG1_J2KR.dcm", "RG1_UNCR.dcm"]
    # Two patients at the top of the tree: RG1's and the CT's, with the study below.
    proxy = window.proxy
    patients = [proxy.index(r, 0).data() for r in range(proxy.rowCount())]
    assert sorted(patients) == ["CompressedSamples^CT1", "CompressedSamples^RG1"]
    # Bad files are listed with path and reason; they did not stop the rest.
    problems = dict(window.problems.problems())
    assert set(Path(p).name for p in problems) == {JUNK_TEXT, JUNK_TRUNCATED}
    assert all(reason for reason in problems.values())
    assert window.problems_dock.windowTitle() == "Problems (2)" and window.problems_dock.isVisible()
    # Status column: the CT is unsupported with its reason code; radiographs not analysed.
    ct_index = window.proxy.mapFromSource(window.tree_model.index_for_key(key_of(window, "CT_small.dcm"), COL_STATUS))
    assert ct_index.data() == "unsupported: unsupported-modality"
    rg1_index = window.proxy.mapFromSource(window.tree_model.index_for_key(key_of(window, "RG1_UNCR.dcm"), COL_STATUS))
    assert rg1_index.data() == "not analysed"
    # The first image was selected and its tags were read.
    assert window.current_entry() is not None
    qtbot.waitUntil(lambda: window.tags.tree.topLevelItemCount() > 10, timeout=20000)
    # The folder became a recent folder (persisted, written in the background).
    qtbot.waitUntil(lambda: load_settings().recent_folders[:1] == [str(folder.resolve())], timeout=10000)
    assert window.recent_menu.actions()[0].text() == str(folder.resolve())
    # Re-dropping the same folder adds nothing.
    with qtbot.waitSignal(window.scanFinished, timeout=60000) as blocker:
        drop(window, [folder])
    assert blocker.args == [0] and len(window.session.entries) == 3


def test_filter_sort_and_study_navigation(qtbot, home: Path, folder: Path) -> None:  # noqa: ANN001
    window = open_window(qtbot, folder)
    # Sortable: by name, both ways.
    names = lambda: [window.proxy.index(r, 0).data() for r in range(window.proxy.rowCount())]  # noqa: E731
    window.tree.sortByColumn(0, Qt.SortOrder.DescendingOrder)
    assert names() == ["CompressedSamples^RG1", "CompressedSamples^CT1"]
    window.tree.sortByColumn(0, Qt.SortOrder.AscendingOrder)
    assert names() == ["CompressedSamples^CT1", "CompressedSamples^RG1"]
    # Filterable: free text over the tags.
    window.filter_edit.setText("RG1")
    assert window.proxy.rowCount() == 1
    window.filter_edit.setText("")
    window.status_filter.setCurrentIndex(window.status_filter.findData(Status.UNSUPPORTED))
    assert visible_image_names(window) == ["CT_small.dcm"]
    window.status_filter.setCurrentIndex(0)
    # Keyboard navigation: next / previous study cycles through both studies.
    window.select_key(key_of(window, "CT_small.dcm"))
    first_study = window.session.entries[window._current_key].record.study_uid
    window.act_next_study.trigger()
    second_study = window.session.entries[window._current_key].record.study_uid
    assert second_study != first_study
    window.act_prev_study.trigger()
    assert window.session.entries[window._current_key].record.study_uid == first_study
    # Tags panel: the selected image's header, filterable.
    qtbot.waitUntil(lambda: any("Modality" in t for t in window.tags.rows_text()), timeout=20000)
    window.tags.filter.setText("Modality")
    assert any(t.endswith("= CT") for t in window.tags.rows_text() if "Modality" in t)


def test_no_model_is_said_plainly(qtbot, home: Path, folder: Path) -> None:  # noqa: ANN001
    window = open_window(qtbot, folder)
    assert window.diagnosis.no_model.isVisible()
    window.select_key(key_of(window, "RG1_UNCR.dcm"))
    assert window.analyse_all() is None  # nothing to run it with
    assert window._no_model_box.isVisible()
    assert "No PneumoLLM model is installed" in window._no_model_box.text()
    window._no_model_box.close()


def test_torch_not_imported_at_window_start_and_smoke_test(tmp_path: Path) -> None:
    env = {**__import__("os").environ, "PNEUMOVIEW_HOME": str(tmp_path), "QT_QPA_PLATFORM": "offscreen"}
    code = (
        "import sys; from pneumoview.ui.app import create_application; app = create_application();"
        "from pneumoview.ui.main_window import MainWindow; w = MainWindow(); w.show(); app.processEvents();"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
    smoke = subprocess.run(
        [sys.executable, "-m", "pneumoview", "--smoke-test"], env=env, capture_output=True, text=True, timeout=120
    )
    assert smoke.returncode == 0, smoke.stderr
    assert "resources OK" in smoke.stdout


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_analyse_review_persist_and_export(qtbot, home: Path, folder: Path, tmp_path: Path) -> None:  # noqa: ANN001
    from pneumoview.report import ExportOptions, columns_for, pseudonym

    window = open_window(qtbot, folder)
    window.use_demo_model()
    assert not window.diagnosis.no_model.isVisible()
    with qtbot.waitSignal(window.analysisFinished, timeout=240000) as blocker:
        job = window.analyse_all()
        assert job is not None
        # The GUI thread is free while the worker runs: the window answers.
        assert window.busy()
    assert blocker.args == [2]  # the two radiographs; the CT is not analysable
    rg1 = window.session.entries[key_of(window, "RG1_UNCR.dcm")]
    assert rg1.status is Status.ANALYSED and rg1.result.demo
    assert 0.0 <= rg1.result.probability <= 1.0
    assert rg1.result.provenance.bundle_name.startswith("DEMO") and rg1.result.provenance.plan
    assert rg1.result.provenance.crop_box is not None and rg1.result.provenance.software_version
    # Table: score with the DEMO mark; the CT shows its reason code instead of a score.
    score = window.proxy.mapFromSource(window.tree_model.index_for_key(rg1.key, COL_SCORE)).data()
    assert score.startswith(f"{rg1.result.probability:.2f}") and DEMO_MARK in score
    ct_score = window.proxy.mapFromSource(
        window.tree_model.index_for_key(key_of(window, "CT_small.dcm"), COL_SCORE)
    ).data()
    assert ct_score == "n/a (unsupported-modality)"
    # Panel: DEMO banner and the probability, for the selected radiograph.
    window.select_key(rg1.key)
    assert window.diagnosis.demo_mark.isVisible() and window.diagnosis.demo_mark.text() == DEMO_MARK
    assert DEMO_MARK in window.diagnosis.headline.text()
    assert f"{rg1.result.probability:.3f}" in window.diagnosis.probability.text()
    # What the model saw: the 224 x 224 crop is shown.
    qtbot.waitUntil(
        lambda: window.model_input.image.pixmap() is not None and not window.model_input.image.pixmap().isNull(),
        timeout=60000,
    )
    assert window.model_input.image.pixmap().width() == 224

    # Reviewer decision through the panel's own buttons, bound to the result on screen.
    window.review.buttons["disagree"].click()
    window.review.comment.setPlainText("rib overlap, not nodules")
    window.review.save_button.click()
    assert rg1.decision.decision == "disagree" and rg1.decision.reviewer == "Dr Test"
    assert rg1.decision.result_id == rg1.result.id is not None
    # Analyse All again: every image has a current result, so nothing is redone.
    assert window.analyse_all() is None and "Re-analyse All" in window.status_label.text()
    probability = rg1.result.probability
    record = rg1.record
    window.close()

    # Reopen: a new window (a restart) shows the earlier result and decision.
    window2 = open_window(qtbot, folder)
    again = window2.session.entries[rg1.key]
    assert again.status is Status.REVIEWED
    assert again.result.probability == pytest.approx(probability) and again.result.demo
    window2.select_key(rg1.key)
    assert window2.review.buttons["disagree"].isChecked()
    assert window2.review.comment.toPlainText() == "rib overlap, not nodules"

    # Export all: the one CSV schema, checked column by column.
    plain = ExportOptions(include_names=True)
    target = tmp_path / "report.csv"
    summary = window2.export(target, selected=False, options=plain)
    rows = _read_csv(target)
    assert tuple(rows[0].keys()) == columns_for(plain)
    assert summary.rows == len(rows) == 3  # two radiographs + the CT's reason
    row = next(r for r in rows if r["path"].endswith("RG1_UNCR.dcm"))
    assert row["patient_id"] == record.patient_id
    assert row["patient_name"] == record.patient_name.replace("^", " ")
    assert row["study_uid"] == record.study_uid
    assert row["accession"] == record.accession
    assert row["study_date"] == f"{record.study_date[:4]}-{record.study_date[4:6]}-{record.study_date[6:]}"
    assert row["view_position"] == record.view_position
    assert float(row["probability"]) == pytest.approx(probability, abs=1e-6)
    assert float(row["threshold"]) == 0.5
    assert row["label"].startswith(DEMO_MARK)
    assert row["model_name"].startswith("DEMO") and row["model_fingerprint"] and row["lung_box"]
    assert row["decision"] == "disagree" and row["review_status"] == "current"
    assert row["comment"] == "rib overlap, not nodules"
    assert row["reviewer"] == "Dr Test"
    assert row["status"] == "analysed" and row["reason_code"] == ""
    ct_row = next(r for r in rows if r["path"].endswith("CT_small.dcm"))
    assert ct_row["status"] == "not-analysed" and ct_row["reason_code"] == "unsupported-modality"
    assert ct_row["probability"] == ""

    # The same schema and the same numbers from `pneumoview analyze`.
    from pneumoview.cli import main

    cli_csv = tmp_path / "cli.csv"
    assert main(["analyze", str(folder), "--demo", "--csv", str(cli_csv), "--include-names", "-q"]) == 1
    cli_rows = _read_csv(cli_csv)
    assert tuple(cli_rows[0].keys()) == tuple(rows[0].keys())
    cli_row = next(r for r in cli_rows if r["path"].endswith("RG1_UNCR.dcm"))
    assert float(cli_row["probability"]) == pytest.approx(probability, abs=1e-5)
    for column in (
        "label",
        "patient_id",
        "study_uid",
        "sop_instance_uid",
        "content_sha256",
        "model_fingerprint",
        "base_fingerprints",
        "lung_box",
        "status",
        "threshold",
    ):
        assert cli_row[column] == row[column], column

    # Export selected, pseudonymised, through the dialog's options (key created and kept).
    from pneumoview.ui.export_dialog import ExportDialog

    window2.select_key(rg1.key)
    dialog = ExportDialog(window2, window2.settings, selected_count=1)
    dialog.pseudonymise.setChecked(True)
    assert not dialog.include_names.isEnabled()
    options = dialog.options()
    assert options.pseudonymise and options.key
    target2 = tmp_path / "pseudo.csv"
    window2.export(target2, selected=True, options=options)
    prow = _read_csv(target2)
    assert len(prow) == 1
    assert tuple(prow[0]) == columns_for(options)
    assert "patient_name" not in prow[0] and "path" not in prow[0] and "comment" not in prow[0]
    key = bytes.fromhex(load_settings().pseudonymise_key)
    assert prow[0]["patient_id"] == pseudonym(key, record.patient_id, kind="patient") != record.patient_id
    assert prow[0]["study_uid"] == pseudonym(key, record.study_uid, kind="study")
    assert prow[0]["accession"] == pseudonym(key, record.accession, kind="accession")
    assert prow[0]["label"].startswith(DEMO_MARK) and prow[0]["decision"] == "disagree"

    # A threshold that flips RG1's label, then Re-analyse All: the window asks, saying how many decisions
    # are at stake, and the old "disagree" turns "needs re-review" (a filter of its own).
    window2.settings.threshold = min(0.99, probability + 0.01) if probability < 0.98 else 0.01
    window2.use_demo_model()
    asked: list[str] = []
    with qtbot.waitSignal(window2.analysisFinished, timeout=240000):
        assert window2.reanalyse_all(confirm=lambda text: asked.append(text) or True) is not None
    assert len(asked) == 1 and "1 reviewer decision(s)" in asked[0]
    again = window2.session.entries[rg1.key]
    assert again.status is Status.NEEDS_REVIEW and again.decision.decision == "disagree"
    window2.status_filter.setCurrentIndex(window2.status_filter.findData(Status.NEEDS_REVIEW))
    assert visible_image_names(window2) == ["RG1_UNCR.dcm"]
    window2.status_filter.setCurrentIndex(0)
    stale = next(
        r
        for r in _read_csv(window2.export(tmp_path / "stale.csv", selected=False, options=plain).path)
        if r["path"].endswith("RG1_UNCR.dcm")
    )
    assert stale["decision"] == "disagree" and stale["review_status"] == "needs re-review"
    assert window2.reanalyse_prompt()[1] == 0  # the same model is loaded: nothing more at stake, no question
    window2.select_key(rg1.key)
    window2.review.save_button.click()  # reviewed again: current
    assert again.status is Status.REVIEWED
    window2.analysis_client.close()  # which model runs next is not known until it loads
    declined: list[str] = []
    assert window2.reanalyse_all(confirm=lambda text: declined.append(text) and False) is None  # declined: no run
    assert len(declined) == 1 and again.status is Status.REVIEWED


def visible_image_names(window: MainWindow) -> list[str]:
    names = []

    def walk(parent) -> None:  # noqa: ANN001
        for row in range(window.proxy.rowCount(parent)):
            index = window.proxy.index(row, 0, parent)
            if index.data(KIND_ROLE) == "image":
                names.append(window.session.entries[index.data(KEY_ROLE)].path.name)
            walk(index)

    from PySide6.QtCore import QModelIndex

    walk(QModelIndex())
    return sorted(names)


def test_files_sharing_a_uid_are_listed_and_the_conflict_is_in_problems(
    qtbot,
    home: Path,
    tmp_path: Path,  # noqa: ANN001
    rg1_uncompressed: Path,
) -> None:
    folder = tmp_path / "twins"
    folder.mkdir()
    (folder / "RG1.dcm").write_bytes(rg1_uncompressed.read_bytes())
    (folder / "RG1_cut.dcm").write_bytes(rg1_uncompressed.read_bytes()[:2_000_000])  # a failed copy, same UID
    window = open_window(qtbot, folder)
    assert sorted(e.path.name for e in window.session.entries.values()) == ["RG1.dcm", "RG1_cut.dcm"]
    assert visible_image_names(window) == ["RG1.dcm", "RG1_cut.dcm"]  # both in the browser
    problems = window.problems.problems()
    conflicts = {Path(p).name: reason for p, reason in problems if "same SOP Instance UID" in reason}
    assert set(conflicts) == {"RG1.dcm", "RG1_cut.dcm"}
    assert str(folder / "RG1_cut.dcm") in conflicts["RG1.dcm"] and str(folder / "RG1.dcm") in conflicts["RG1_cut.dcm"]
    kinds = [window.problems.item(r, 2).text() for r in range(window.problems.rowCount())]
    assert kinds.count("duplicate-uid") == 2
    assert window.problems_dock.windowTitle() == f"Problems ({len(problems)})"


def test_unwritable_results_database_is_said_and_the_window_still_works(  # noqa: ANN201
    qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: Path
):  # noqa: ANN001
    home = tmp_path / "broken-home"
    home.mkdir()
    (home / "data").write_text("a file where the data folder should be")
    monkeypatch.setenv("PNEUMOVIEW_HOME", str(home))
    from PySide6.QtWidgets import QMessageBox

    window = open_window(qtbot)
    assert window.result_store is None and window.session.store is None

    def warning_shown() -> bool:
        return any(
            box.windowTitle() == "The results database cannot be opened" and "not be saved" in box.text()
            for box in window.findChildren(QMessageBox)
        )

    qtbot.waitUntil(warning_shown, timeout=5000)
    with qtbot.waitSignal(window.scanFinished, timeout=60000):
        window.open_paths([folder])
    assert len(window.session.entries) == 3  # browsing still works; nothing is saved


def test_gui_without_a_display_says_so_in_one_line(tmp_path) -> None:
    """No DISPLAY / WAYLAND_DISPLAY / QT_QPA_PLATFORM on Linux: a clear message and exit 2, not Qt's abort."""
    import os
    import subprocess
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("the display check applies to Linux")
    env = {k: v for k, v in os.environ.items() if k not in {"DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"}}
    env["PNEUMOVIEW_HOME"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-m", "pneumoview"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "no display found" in out.stderr
    assert "QT_QPA_PLATFORM=offscreen" in out.stderr
