"""The main window as a reading workstation: layout at 1600x1000 and 1280x800, Problems dock, Invert,
the worklist, a full keyboard-only read with save-and-next, Help / About, the title, the final rule."""

from __future__ import annotations

import os
from pathlib import Path

import pydicom
import pytest
from PySide6.QtCore import QPoint, QRect, Qt, QTimer
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QWidget
from ui_support import reviewer_home

from pneumoview.reading.repository import ReadingRepository
from pneumoview.settings import load_settings, save_settings
from pneumoview.ui.help import COMPONENTS, NOT_A_MEDICAL_DEVICE, AboutDialog, ShortcutsDialog, shortcut_rows
from pneumoview.ui.main_window import MainWindow
from pneumoview.ui.menus import HELP_ACTIONS, MENU_ACTIONS, key_text
from pneumoview.ui.reading_dialogs import READING_MENU
from pneumoview.ui.reading_form import SHORTCUTS

pytestmark = pytest.mark.timeout(300)


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return reviewer_home(tmp_path, monkeypatch)


@pytest.fixture()
def two_studies(tmp_path: Path, rg1_uncompressed: Path) -> Path:
    """The real RG1 chest CR, and a copy of it re-labelled as another worker's study (new Study /
    SOP Instance UIDs, Patient ID): two studies to read."""
    folder = tmp_path / "films"
    folder.mkdir()
    os.symlink(rg1_uncompressed, folder / "RG1_UNCR.dcm")
    ds = pydicom.dcmread(rg1_uncompressed)
    ds.StudyInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.PatientID, ds.PatientName, ds.StudyDate = "W-0002", "Second^Worker", "20260115"
    ds.save_as(folder / "second.dcm")
    return folder


def open_window(qtbot, folder: Path, size: tuple[int, int]) -> MainWindow:  # noqa: ANN001
    window = MainWindow()
    qtbot.addWidget(window)
    window.resize(*size)
    window.show()
    qtbot.waitExposed(window)
    with qtbot.waitSignal(window.scanFinished, timeout=60000):
        window.open_paths([folder])
    qtbot.waitUntil(lambda: window.viewer.view is not None, timeout=60000)
    return window


def fully_on_screen(widget: QWidget, window: MainWindow) -> bool:
    """Shown, inside the window, and not clipped by a scroll area or a dock."""
    rect = QRect(widget.mapTo(window, QPoint(0, 0)), widget.size())
    return (
        widget.isVisible() and window.rect().contains(rect) and widget.visibleRegion().boundingRect() == widget.rect()
    )


def test_layout_at_1600x1000(qtbot, home: Path, two_studies: Path) -> None:  # noqa: ANN001
    window = open_window(qtbot, two_studies, (1600, 1000))
    assert window.viewer.width() / window.width() >= 0.60
    assert not window.problems_dock.isVisible()  # no problem: no Problems dock
    # Answer first; provenance collapsed; Invert unpressed on this MONOCHROME1 image.
    assert window.diagnosis.isVisible() and not window.diagnosis.details.isVisible()
    assert window.viewer.view.display.invert and window.viewer.rendered_inverted
    assert not window.act_invert.isChecked() and not window.viewer.invert
    window.act_invert.trigger()
    assert window.viewer.invert and not window.viewer.rendered_inverted
    window.act_reset.trigger()
    assert not window.act_invert.isChecked() and not window.viewer.invert
    # Every side panel collapses from the View menu.
    view_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&View")
    toggles = {a.text(): a for a in view_menu.actions() if a.isCheckable() and a.text() != "Lung &Box Overlay"}
    assert set(toggles) >= {"Studies and worklist", "DICOM tags", "AI result and decision", "ILO reading"}
    toggles["Studies and worklist"].trigger()
    assert not window.browser_dock.isVisible()
    toggles["Studies and worklist"].trigger()
    assert window.browser_dock.isVisible()
    # The first problem shows the Problems dock.
    window.problems.add_message("x.dcm", "unreadable", "test")
    window._problems_changed()
    assert window.problems_dock.isVisible() and window.problems_dock.windowTitle() == "Problems (1)"


def test_layout_at_1280x800_keeps_the_controls_on_screen(qtbot, home: Path, two_studies: Path) -> None:  # noqa: ANN001
    window = open_window(qtbot, two_studies, (1280, 800))
    assert window.viewer.width() >= 600 and window.viewer.height() >= 500  # the image stays readable
    for button in window.review.buttons.values():
        assert fully_on_screen(button, window), button.text()
    assert fully_on_screen(window.review.save_button, window)
    window.reading_form_dock.raise_()
    qtbot.waitUntil(lambda: window.reading_dock.isVisible())
    assert fully_on_screen(window.reading_dock.save_button, window)
    # The form is usable without a horizontal scroll bar.
    assert not window.reading_dock.scroll.horizontalScrollBar().isVisible()


def _type_sign_in(name: str) -> None:
    """Answer the modal sign-in dialog by keyboard once it is up (select all, type, Enter)."""
    dialog = QApplication.activeModalWidget()
    if dialog is None or not dialog.isVisible():
        QTimer.singleShot(20, lambda: _type_sign_in(name))
        return
    field = dialog.name.lineEdit()
    QTest.keyClick(field, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    QTest.keyClicks(field, name)
    QTest.keyClick(field, Qt.Key.Key_Return)
    if dialog.isVisible():  # the editable list took the first Return
        QTest.keyClick(dialog, Qt.Key.Key_Return)


def keys(key: Qt.Key, modifier: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier) -> None:
    QTest.keyClick(QApplication.focusWidget(), key, modifier)


def test_a_full_read_without_the_mouse(qtbot, home: Path, two_studies: Path) -> None:  # noqa: ANN001
    window = open_window(qtbot, two_studies, (1600, 1000))
    window.activateWindow()
    qtbot.waitActive(window)
    first = window.current_entry().record.study_uid
    # Next unread (Ctrl+Right) before anybody signed in: the other study.
    keys(Qt.Key.Key_Right, Qt.KeyboardModifier.ControlModifier)
    second = window.current_entry().record.study_uid
    assert second != first
    # F2: sign in (by keyboard) and land in the docked form on film quality.
    QTimer.singleShot(0, lambda: _type_sign_in("Ada Okafor"))
    keys(Qt.Key.Key_F2)
    assert window.reading_menu.reader == "Ada Okafor"
    qtbot.waitUntil(lambda: QApplication.focusWidget() is window.reading_dock.form.quality)
    form = window.reading_dock.form
    # Fill the form: profusion 0/0 typed into its list ("1" would be a viewer shortcut elsewhere),
    # a comment, then Tab leaves the comment box.
    keys(Qt.Key.Key_P, Qt.KeyboardModifier.AltModifier)
    assert QApplication.focusWidget() is form.profusion
    QTest.keyClicks(form.profusion, "1/1")
    assert form.profusion.currentData() == "1/1" and window.viewer._fit  # "1" did not zoom the viewer to 1:1
    qtbot.wait(QApplication.keyboardInputInterval() + 100)  # a new type-ahead search
    QTest.keyClicks(form.profusion, "0/0")
    assert form.profusion.currentData() == "0/0"
    keys(Qt.Key.Key_C, Qt.KeyboardModifier.AltModifier)
    assert QApplication.focusWidget() is form.comments
    QTest.keyClicks(form.comments, "clear lungs")
    keys(Qt.Key.Key_Tab)
    assert QApplication.focusWidget() is not form.comments and "\t" not in form.comments.toPlainText()
    form.comments.setFocus()
    # Ctrl+Enter saves and moves to the next unread study (the first one).
    keys(Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    repo = ReadingRepository(window.result_store)
    stored = repo.readings_for(second)
    assert [(r.reader, r.reading.profusion, r.reading.comments) for r in stored] == [
        ("Ada Okafor", "0/0", "clear lungs")
    ]
    assert window.current_entry().record.study_uid == first
    assert QApplication.focusWidget() is form.quality
    rows = {r.study_uid: r for r in window.worklist.model.rows}
    assert rows[second].reading_status == "read by 1 reader" and rows[first].reading_status == "unread"
    # The decision shortcuts: Ctrl+2 (disagree) + Ctrl+S, from wherever the focus is.
    keys(Qt.Key.Key_2, Qt.KeyboardModifier.ControlModifier)
    keys(Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    assert window.current_entry().decision is not None and window.current_entry().decision.decision == "disagree"
    # Read the first study too: nothing is left unread for this reader.
    keys(Qt.Key.Key_N, Qt.KeyboardModifier.AltModifier)
    keys(Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert [r.reader for r in repo.readings_for(first)] == ["Ada Okafor"]
    assert "no unread study left" in window.status_label.text()
    window.worklist.set_filter("unread")
    assert window.worklist.visible_keys() == []
    window.worklist.set_filter("disagreement")  # the reviewer disagreed with the AI on the first study
    assert window.worklist.visible_keys() == [window.current_entry().key]


def test_window_shortcuts_are_unique_and_all_listed_in_help(qtbot, home: Path) -> None:  # noqa: ANN001
    window_keys = [key_text(k) for _m, _a, t, _s, k in MENU_ACTIONS + HELP_ACTIONS if k is not None]
    window_keys += [key_text(e.shortcut) for e in READING_MENU if e.shortcut]
    window_keys = [k for k in window_keys if k]  # a standard key with no binding on this platform
    assert len(window_keys) == len(set(window_keys)), "two window actions share a key"
    listed = {keys_ for _where, keys_, _what in shortcut_rows()}
    assert set(window_keys) <= listed
    assert {key_text(k) for _a, k, _w in SHORTCUTS} <= listed
    # every shortcut the real window carries (menus installed by controllers included) is listed
    window = MainWindow()
    qtbot.addWidget(window)
    listed_keys = {k for keys_ in listed for k in keys_.split(", ")}
    carried = [
        b.toString(QKeySequence.SequenceFormat.NativeText) for a in window.findChildren(QAction) for b in a.shortcuts()
    ]
    assert carried and len(carried) == len(set(carried)), "two window actions share a key"
    assert set(carried) <= listed_keys, set(carried) - listed_keys
    dialog = ShortcutsDialog()
    qtbot.addWidget(dialog)
    assert dialog.table.rowCount() == len(shortcut_rows())
    texts = {dialog.table.item(r, 1).text() for r in range(dialog.table.rowCount())}
    assert key_text("Ctrl+Right") in texts and key_text("Ctrl+Return") in texts


def test_about_and_the_title_follow_the_active_model(qtbot, home: Path) -> None:  # noqa: ANN001
    from pneumoview import __version__
    from pneumoview.ui.help import ModelSummary, licence_rows

    window = MainWindow()
    qtbot.addWidget(window)
    assert window.windowTitle() == "PneumoView - no model"
    window.use_demo_model()
    assert window.windowTitle().endswith("DEMO")
    about = AboutDialog(window.active_model_summary(), window)
    qtbot.addWidget(about)
    text = about.text.text()
    assert __version__ in text and NOT_A_MEDICAL_DEVICE in text and "DEMO" in text
    rows = {name: (version, licence) for name, version, licence in licence_rows()}
    assert set(rows) == {name for name, _ in COMPONENTS}
    assert "MIT" in rows["pydicom"][1] and rows["pydicom"][0] == pydicom.__version__  # from the metadata
    assert all(licence for _version, licence in rows.values())
    registered = AboutDialog(ModelSummary("clinic-model", "ab" * 32, False))
    qtbot.addWidget(registered)
    assert "clinic-model" in registered.text.text() and "ab" * 32 in registered.text.text()


def test_final_rule_is_a_setting(qtbot, home: Path) -> None:  # noqa: ANN001
    from pneumoview.reading.rules import FinalRule
    from pneumoview.ui.settings_dialog import SettingsDialog

    settings = load_settings()
    dialog = SettingsDialog(settings)
    qtbot.addWidget(dialog)
    assert dialog.final_rule_combo.currentData() == FinalRule().to_json_dict()  # the default rule
    dialog.final_rule_combo.setCurrentIndex(
        dialog.final_rule_combo.findData({"agree_on": "major", "large_opacities": True})
    )
    saved = dialog.result_settings()
    save_settings(saved)
    assert load_settings().final_rule == {"agree_on": "major", "large_opacities": True}
    window = MainWindow()
    qtbot.addWidget(window)
    assert window.final_rule() == FinalRule("major", True) == window.reading_menu.rule
    window.settings.final_rule = {"agree_on": "nonsense"}  # a hand-edited file: the default rule, logged
    assert window.final_rule() == FinalRule()
