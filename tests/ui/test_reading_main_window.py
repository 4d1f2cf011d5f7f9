"""The Reading menu in the main window: the ILO form opens for the study of the image on screen."""

from __future__ import annotations

from pathlib import Path

import pytest
from ui_support import reviewer_home

from pneumoview.reading.ilo import normal_reading
from pneumoview.ui.main_window import MainWindow
from pneumoview.ui.reading_dialogs import READING_MENU


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return reviewer_home(tmp_path, monkeypatch)


def test_reading_menu_reads_the_selected_study(qtbot, home: Path, rg1_uncompressed: Path) -> None:
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignal(window.scanFinished, timeout=60000):
        window.open_paths([rg1_uncompressed])
    menus = {a.text(): a.menu() for a in window.menuBar().actions()}
    assert [a.text() for a in menus["&Reading"].actions()] == [e.text for e in READING_MENU]
    entry = next(iter(window.session.entries.values()))
    window.select_key(entry.key)
    controller = window.reading_menu
    assert controller.suggested_name == "Dr Test"  # the app's reviewer name is offered at sign-in
    controller.reader = controller._repository().sign_in("Ada")
    dialog = controller.read_selected()
    assert dialog is not None and dialog.study_uid == entry.record.study_uid != ""
    qtbot.addWidget(dialog)
    dialog.form.fill_normal()
    assert dialog.form.submit()
    assert [r.reading for r in dialog.repo.readings_for(entry.record.study_uid)] == [normal_reading()]
