"""ui/compare_view.py: the current study beside a prior or an ILO standard, with W/L and zoom/pan synchronised."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from priors_support import CURRENT, OTHER_WORKER, PRIOR, make_priors_folder
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QKeySequence, QMouseEvent
from PySide6.QtWidgets import QApplication
from ui_support import open_window_on, reviewer_home

from pneumoview.dicom.display import Window, load_display_image
from pneumoview.imageio import load_viewable
from pneumoview.settings import load_settings, save_settings
from pneumoview.standards import WHERE_TO_SET
from pneumoview.ui.compare_view import (
    COMPARE_MENU,
    ROLE_CURRENT,
    ROLE_PRIOR,
    SYNC_NAME,
    ComparedImage,
    CompareWindow,
    map_window,
)
from pneumoview.ui.settings_dialog import SettingsDialog
from pneumoview.ui.viewer import ImageViewer


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return reviewer_home(tmp_path, monkeypatch)


@pytest.fixture(scope="module")
def worker_folder(tmp_path_factory: pytest.TempPathFactory, rg1_uncompressed: Path) -> Path:
    return make_priors_folder(tmp_path_factory.mktemp("compare"), rg1_uncompressed)


def _first_png(shared_data: Path) -> Path:
    return sorted((shared_data / "cxr" / "images").glob("*.png"))[0]


# ----------------------------------------------------------------------------- window/level mapping
def test_window_copied_between_images_with_voi(rg1_uncompressed: Path, rg1_j2k: Path) -> None:
    a, b = load_display_image(rg1_uncompressed), load_display_image(rg1_j2k)
    assert a.windows and b.windows
    lung = Window(center=9000.0, width=4000.0, name="Lung")
    assert map_window(lung, a, b) == Window(center=9000.0, width=4000.0, name=SYNC_NAME)


def test_window_mapped_relative_to_the_defaults_without_voi(rg1_uncompressed: Path, shared_data: Path) -> None:
    dicom, picture = load_display_image(rg1_uncompressed), load_viewable(_first_png(shared_data))
    assert dicom.windows and not picture.windows and dicom.invert and not picture.invert  # RG1 is MONOCHROME1
    d, p = dicom.default_window, picture.default_window
    assert map_window(d, dicom, picture) == dataclasses.replace(p, name=SYNC_NAME)
    narrower = Window(center=d.center + 0.1 * d.width, width=d.width / 2)
    same_way = map_window(narrower, dicom, picture, source_invert=False)  # both shown uninverted
    assert same_way.center == pytest.approx(p.center + 0.1 * p.width) and same_way.width == pytest.approx(p.width / 2)
    mirrored = map_window(narrower, dicom, picture)  # RG1 shown inverted: the offset is mirrored
    assert mirrored.center == pytest.approx(p.center - 0.1 * p.width) and mirrored.width == pytest.approx(p.width / 2)
    back = map_window(mirrored, picture, dicom)
    assert back.center == pytest.approx(narrower.center) and back.width == pytest.approx(narrower.width)


def test_absolute_copy_only_when_both_are_shown_the_same_way_round(rg1_uncompressed: Path, rg1_j2k: Path) -> None:
    a, b = load_display_image(rg1_uncompressed), load_display_image(rg1_j2k)
    window = Window(center=a.default_window.center + 1000.0, width=4000.0)
    flipped = map_window(window, a, b, target_invert=False)  # the other side's Invert pressed
    assert flipped.center == pytest.approx(b.default_window.center - 1000.0) and flipped.width == pytest.approx(4000.0)


def test_a_voi_lut_window_is_not_mapped(rg1_uncompressed: Path, rg1_j2k: Path) -> None:
    a, b = load_display_image(rg1_uncompressed), load_display_image(rg1_j2k)
    assert map_window(Window(0.0, 1.0, function="LUT", lut_index=0), a, b) == b.default_window


# ----------------------------------------------------------------------------- the window, synchronised
def _send_drag(viewer: ImageViewer, start: QPointF, end: QPointF, modifiers: Qt.KeyboardModifier) -> None:
    """A real left-button drag (Shift: pan, none: window/level) delivered as Qt mouse events."""
    left = Qt.MouseButton.LeftButton
    for kind, point, button, buttons in (
        (QMouseEvent.Type.MouseButtonPress, start, left, left),
        (QMouseEvent.Type.MouseMove, end, Qt.MouseButton.NoButton, left),
        (QMouseEvent.Type.MouseButtonRelease, end, left, Qt.MouseButton.NoButton),
    ):
        event = QMouseEvent(kind, point, viewer.mapToGlobal(point), button, buttons, modifiers)
        QApplication.sendEvent(viewer, event)


def _open_compare(qtbot, current: Path, other: Path, *, sync: bool = True) -> CompareWindow:  # noqa: ANN001
    view = CompareWindow(
        ComparedImage(current, ROLE_CURRENT, "2004-08-26"), [ComparedImage(other, ROLE_PRIOR, "2001-03-05")], sync=sync
    )
    qtbot.addWidget(view)
    view.resize(1200, 700)
    view.show()
    qtbot.waitUntil(lambda: view.left.view is not None and view.right.view is not None, timeout=60000)
    return view


def test_window_level_and_zoom_pan_follow_the_other_side(qtbot, worker_folder: Path) -> None:
    view = _open_compare(qtbot, worker_folder / CURRENT, worker_folder / PRIOR)
    assert view.synchronised and view.left_label.text() == "Current: 2004-08-26"
    assert view.right_label.text() == "Prior: 2001-03-05"
    lung = next(p for p in view.left.presets() if p.name == "Lung")
    view.left.set_window(lung)
    assert (view.right.window.center, view.right.window.width) == (lung.center, lung.width)
    _send_drag(view.right, QPointF(200, 200), QPointF(260, 170), Qt.KeyboardModifier.NoModifier)  # W/L drag
    assert view.right.window.name == "Custom" and view.right.window != lung
    assert (view.left.window.center, view.left.window.width) == (view.right.window.center, view.right.window.width)
    view.left.one_to_one()  # zoom
    assert view.right.view_state() == pytest.approx(view.left.view_state())
    before = view.left.view_state()
    _send_drag(view.right, QPointF(300, 300), QPointF(340, 250), Qt.KeyboardModifier.ShiftModifier)  # pan
    assert view.left.view_state() == pytest.approx(view.right.view_state()) and view.left.view_state() != before
    view.fit_both()
    assert view.left.view_state() == pytest.approx((1.0, 0.5, 0.5)) == view.right.view_state()


def test_switching_sync_off_keeps_the_sides_apart(qtbot, worker_folder: Path, shared_data: Path) -> None:
    view = _open_compare(qtbot, worker_folder / CURRENT, _first_png(shared_data), sync=False)
    assert view.right.no_dicom_header and not view.left.no_dicom_header
    right_window = view.right.window
    view.left.set_window(next(p for p in view.left.presets() if p.name == "Bone"))
    view.left.one_to_one()
    assert view.right.window == right_window and view.right.view_state() == pytest.approx((1.0, 0.5, 0.5))
    view.sync_check.setChecked(True)  # on again: the current image leads, mapped relative to the defaults
    expected = map_window(view.left.window, view.left.view.display, view.right.view.display)
    assert view.right.window == expected and expected.name == SYNC_NAME
    assert view.right.view_state() == pytest.approx(view.left.view_state())


# ----------------------------------------------------------------------------- in the main window
def test_compare_with_prior_from_the_view_menu(qtbot, home: Path, worker_folder: Path) -> None:
    window = open_window_on(qtbot, [worker_folder])
    menus = {a.text(): a.menu() for a in window.menuBar().actions()}
    texts = [a.text() for a in menus["&View"].actions()]
    assert texts[-len(COMPARE_MENU) :] == [e.text for e in COMPARE_MENU]
    shortcuts = [
        a.shortcut().toString() for a in window.findChildren(type(window.act_fit)) if not a.shortcut().isEmpty()
    ]
    for entry in COMPARE_MENU:  # shortcuts used nowhere else in the window
        assert shortcuts.count(QKeySequence(entry.shortcut).toString()) == 1
    current = next(e for e in window.session.entries.values() if e.path.name == CURRENT)
    window.select_key(current.key)
    assert window.compare.compare_with_prior() is not None  # priors are looked for in a worker thread
    qtbot.waitUntil(lambda: len(window.compare.windows) == 1, timeout=60000)
    view = window.compare.windows[0]
    assert [view.chooser.itemText(i) for i in range(view.chooser.count())] == ["2001-03-05 (CR PA, open)"]
    assert view.left_label.text() == "Current: 2004-08-26 (CR PA)" and view.right_label.text().startswith("Prior: 2001")
    qtbot.waitUntil(lambda: view.right.view is not None, timeout=60000)
    assert view.right.view.path.name == PRIOR and view.synchronised
    other = next(e for e in window.session.entries.values() if e.path.name == OTHER_WORKER)
    window.select_key(other.key)
    window.compare.compare_with_prior()
    qtbot.waitUntil(lambda: "No earlier study" in window.compare.last_message, timeout=60000)
    assert len(window.compare.windows) == 1


def test_compare_with_an_ilo_standard(
    qtbot, home: Path, tmp_path: Path, shared_data: Path, rg1_uncompressed: Path
) -> None:
    window = open_window_on(qtbot, [rg1_uncompressed])
    window.select_key(next(iter(window.session.entries)))
    qtbot.waitExposed(window)
    shortcut = QKeySequence(next(e.shortcut for e in COMPARE_MENU if e.action == "compare_with_standard"))
    combo = shortcut[0]
    qtbot.keyClick(window.viewer, combo.key(), combo.keyboardModifiers())  # the keyboard reaches it
    assert WHERE_TO_SET in window.compare.last_message and not window.compare.windows
    folder = tmp_path / "ilo"
    folder.mkdir()
    os.symlink(_first_png(shared_data), folder / "1p.png")
    os.symlink(rg1_uncompressed, folder / "0-0.dcm")
    dialog = SettingsDialog(window.settings, window)  # the setting's field in File > Settings...
    qtbot.addWidget(dialog)
    dialog.standards_edit.setText(f"  {folder}  ")
    window.settings = dialog.result_settings()
    assert window.settings.ilo_standards_folder == str(folder)
    save_settings(window.settings)
    assert load_settings().ilo_standards_folder == str(folder)  # kept across restarts
    view = window.compare.compare_with_standard()
    assert view is not None and not view.synchronised  # standards: not synchronised by default
    assert [view.chooser.itemText(i) for i in range(view.chooser.count())] == ["0/0", "1/1 p/p"]
    assert view.right_label.text() == "ILO standard: 0/0"
    view.chooser.setCurrentIndex(1)
    qtbot.waitUntil(lambda: view.right.view is not None and view.right.no_dicom_header, timeout=60000)
