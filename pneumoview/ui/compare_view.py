"""Side-by-side comparison: the study on screen beside a prior of the same worker or an ILO standard image.

:class:`CompareWindow` holds two :class:`~pneumoview.ui.viewer.ImageViewer` widgets (pixels decoded
in the viewer's decoder worker processes, as in the main window), each headed by its role
("current", "prior", "ILO standard") and its date or standard name; a chooser picks which prior /
standard the right-hand side shows.

Synchronisation (the "Synchronise" check box) applies a change on either side to the other:

* **Window / level**, by :func:`map_window`: when both images carry VOI information of their own
  (Window Center / Width (0028,1050/1051) or a VOI LUT Sequence (0028,3010)) and are shown the same
  way round, the window centre and width are copied as they are (the same DICOM display units on both
  sides); otherwise the window is mapped *relative to each image's default window* (centre offset and
  width in units of the default width), so that both defaults correspond and a picture without a
  header (grey levels 0..255) follows a DICOM image sensibly; when one side is shown inverted
  (MONOCHROME1, or the Invert button) and the other not, the centre's offset is mirrored so that both
  get brighter or darker together. Invert itself is not synchronised. A VOI LUT item (function "LUT") cannot be mapped: the other side
  returns to its own default window.
* **Zoom and pan**, by :meth:`ImageViewer.view_state`: the magnification relative to "fit" and the
  image point at the centre of the view (as fractions of the image's width and height) are copied,
  so both sides show the same part of the chest at the same size in the window whatever their matrix.

Priors are synchronised by default; ILO standards are not (a standard is another person's film with
its own exposure, meant to be seen as the ILO issued it): the reader can switch it on.

:class:`CompareController` adds *Compare with Prior...* and *Compare with ILO Standard...* to the
main window's View menu (:data:`COMPARE_MENU`), finds the priors off the GUI thread
(:func:`pneumoview.priors.priors_for`) and lists the standards folder (:mod:`pneumoview.standards`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import Qt, QThreadPool
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from pneumoview.dicom.display import LUT_FUNCTION, DisplayImage, Window
from pneumoview.errors import PneumoViewError
from pneumoview.ui.menus import MenuEntry, add_entries
from pneumoview.ui.viewer import ImageViewer
from pneumoview.ui.workers import FunctionJob, start

if TYPE_CHECKING:
    from pneumoview.priors import StudyOnFile
    from pneumoview.session import ImageEntry

ROLE_CURRENT, ROLE_PRIOR, ROLE_STANDARD = "current", "prior", "ILO standard"
SYNC_NAME = "Synchronised"


@dataclass(frozen=True)
class ComparedImage:
    """One side's image: its file, its role and what identifies it for the reader (a date, a standard name)."""

    path: Path
    role: str  # ROLE_*
    title: str  # "2004-08-26", "1/1 p/p"
    detail: str = ""  # "(CR PA, results database)"

    @property
    def heading(self) -> str:
        return f"{role_text(self.role)}: {self.title} {self.detail}".strip()


def role_text(role: str) -> str:
    """ "Current", "Prior", "ILO standard"."""
    return role if role == ROLE_STANDARD else role.capitalize()


# --------------------------------------------------------------------------- window/level mapping
def has_voi(display: DisplayImage) -> bool:
    """True when the file states its own VOI transform (window centre/width or a VOI LUT)."""
    return bool(display.windows)


def reference_window(display: DisplayImage) -> Window:
    """The window a relative mapping is measured against: the default one, or min..max when that is a LUT."""
    default = display.default_window
    if default.function != LUT_FUNCTION and default.width > 0:
        return default
    lo, hi = float(np.min(display.values)), float(np.max(display.values))
    return Window(center=(lo + hi) / 2, width=max(hi - lo, 1.0))


def map_window(
    window: Window,
    source: DisplayImage,
    target: DisplayImage,
    *,
    source_invert: bool | None = None,
    target_invert: bool | None = None,
) -> Window:
    """``window`` (shown on ``source``) for ``target``: copied when both have VOI information and are shown the
    same way round, else mapped relative to each one's default window (see the module); a LUT window gives the
    target's default. ``*_invert`` (default: each file's own, MONOCHROME1 / INVERSE) say whether a side is shown
    inverted: when only one is, the centre's offset is mirrored, so that both sides get brighter together."""
    if window.function == LUT_FUNCTION:
        return target.default_window
    flipped = (source.invert if source_invert is None else source_invert) != (
        target.invert if target_invert is None else target_invert
    )
    if has_voi(source) and has_voi(target) and not flipped:
        return dataclasses.replace(window, name=SYNC_NAME, lut_index=None)
    src, dst = reference_window(source), reference_window(target)
    offset = (window.center - src.center) / src.width * dst.width
    return Window(
        center=dst.center - offset if flipped else dst.center + offset,
        width=max(window.width / src.width * dst.width, 1e-6),
        function=window.function,
        name=SYNC_NAME,
    )


def _same_window(a: Window | None, b: Window | None) -> bool:
    if a is None or b is None:
        return a is b
    tolerance = 1e-6 * max(1.0, abs(a.width), abs(b.width))
    return a.function == b.function and abs(a.center - b.center) <= tolerance and abs(a.width - b.width) <= tolerance


# --------------------------------------------------------------------------- the window
class CompareWindow(QWidget):
    """Current image (left) beside a chosen prior or standard (right), optionally synchronised."""

    def __init__(
        self,
        current: ComparedImage,
        choices: Sequence[ComparedImage],
        *,
        sync: bool = True,
        parent: QWidget | None = None,
        pool: QThreadPool | None = None,
    ) -> None:
        super().__init__(parent, Qt.WindowType.Window)
        self.setObjectName("compareWindow")
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.current, self.choices = current, list(choices)
        role = self.choices[0].role if self.choices else ROLE_PRIOR
        self.setWindowTitle(f"PneumoView - compare with {'an ILO standard' if role == ROLE_STANDARD else 'a prior'}")
        self.resize(1400, 850)
        self._syncing = False
        self.left, self.right = ImageViewer(), ImageViewer()
        for viewer in (self.left, self.right):
            viewer.pool = pool
            viewer.windowChanged.connect(lambda _w, v=viewer: self._window_changed(v))
            viewer.viewMoved.connect(lambda v=viewer: self._view_moved(v))
            viewer.imageLoaded.connect(lambda _p, v=viewer: self._loaded(v))
        self.left_label, self.right_label = QLabel(current.heading), QLabel("")
        for label in (self.left_label, self.right_label):
            label.setStyleSheet("font-weight: bold; padding: 2px")
        self.chooser = QComboBox()
        self.chooser.setObjectName("compareChooser")
        for choice in self.choices:
            self.chooser.addItem(f"{choice.title} {choice.detail}".strip(), os.fspath(choice.path))
        self.sync_check = QCheckBox("&Synchronise window/level and zoom/pan")
        self.sync_check.setChecked(sync)
        self.sync_check.toggled.connect(self._sync_toggled)
        fit = QPushButton("&Fit both")
        fit.clicked.connect(self.fit_both)
        self._build_layout(fit)
        self.chooser.currentIndexChanged.connect(self.show_choice)
        self.left.show_path(current.path)
        if self.choices:
            self.show_choice(0)

    def _build_layout(self, fit: QPushButton) -> None:
        bar = QHBoxLayout()
        bar.addWidget(QLabel(f"{role_text(self.choices[0].role if self.choices else ROLE_PRIOR)}:"))
        bar.addWidget(self.chooser, 1)
        bar.addWidget(self.sync_check)
        bar.addWidget(fit)
        sides = QHBoxLayout()
        for label, viewer in ((self.left_label, self.left), (self.right_label, self.right)):
            column = QVBoxLayout()
            column.addWidget(label)
            column.addWidget(viewer, 1)
            sides.addLayout(column, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addLayout(sides, 1)

    @property
    def synchronised(self) -> bool:
        return self.sync_check.isChecked()

    def show_choice(self, index: int) -> None:
        if 0 <= index < len(self.choices):
            choice = self.choices[index]
            self.right_label.setText(choice.heading)
            self.right.show_path(choice.path)

    def fit_both(self) -> None:
        self.left.fit()
        self.right.fit()

    def _other(self, viewer: ImageViewer) -> ImageViewer:
        return self.right if viewer is self.left else self.left

    # -- synchronisation ------------------------------------------------------------------------
    def _window_changed(self, viewer: ImageViewer) -> None:
        other = self._other(viewer)
        if self._syncing or not self.synchronised or viewer.view is None or other.view is None:
            return
        window = map_window(
            viewer.window,
            viewer.view.display,
            other.view.display,
            source_invert=viewer.rendered_inverted,
            target_invert=other.rendered_inverted,
        )
        if _same_window(window, other.window):
            return
        self._syncing = True
        try:
            other.set_window(window)
        finally:
            self._syncing = False

    def _view_moved(self, viewer: ImageViewer) -> None:
        other = self._other(viewer)
        if self._syncing or not self.synchronised or other.view is None:
            return
        state = viewer.view_state()
        if state is None:
            return
        self._syncing = True
        try:
            other.set_view_state(*state)
        finally:
            self._syncing = False

    def _loaded(self, _viewer: ImageViewer) -> None:
        """A side finished loading: once both are there, the current image (left) leads."""
        if self.synchronised:
            self._push(self.left, self.right)

    def _push(self, source: ImageViewer, target: ImageViewer) -> None:
        """``target`` takes ``source``'s window and view."""
        if source.view is None or target.view is None:
            return
        self._syncing = True
        try:
            target.set_window(
                map_window(
                    source.window,
                    source.view.display,
                    target.view.display,
                    source_invert=source.rendered_inverted,
                    target_invert=target.rendered_inverted,
                )
            )
            state = source.view_state()
            if state is not None:
                target.set_view_state(*state)
        finally:
            self._syncing = False

    def _sync_toggled(self, on: bool) -> None:
        if on:
            self._push(self.left, self.right)


# --------------------------------------------------------------------------- building the sides
def prior_choice(study: StudyOnFile) -> ComparedImage:
    """A prior study as the right-hand side (its frontal image first, see StudyOnFile.image)."""
    image = study.image
    what = " ".join(p for p in (image.modality, image.view_position) if p)
    detail = f"({what + ', ' if what else ''}{study.source})"
    return ComparedImage(Path(image.path), ROLE_PRIOR, study.date_text, detail)


def current_side(entry: ImageEntry) -> ComparedImage:
    from pneumoview.priors import format_date

    record = entry.record
    if record.picture_format:
        return ComparedImage(entry.path, ROLE_CURRENT, entry.path.name, "(no DICOM header)")
    what = " ".join(p for p in (record.modality, record.view_position) if p)
    return ComparedImage(entry.path, ROLE_CURRENT, format_date(record.study_date), f"({what})" if what else "")


#: The entries added to the main window's View menu (shortcuts not used elsewhere: see the README's list).
COMPARE_MENU: tuple[MenuEntry, ...] = (
    MenuEntry("compare_with_prior", "Compare with &Prior...", "Ctrl+Alt+P"),
    MenuEntry("compare_with_standard", "Compare with ILO &Standard...", "Ctrl+Alt+S"),
)


class CompareController:
    """Opens :class:`CompareWindow` for the main window's image on screen."""

    def __init__(self, window: QMainWindow) -> None:
        self.window = window
        self.windows: list[CompareWindow] = []  # open comparison windows (tests, closing)
        self._jobs: list[FunctionJob] = []
        self.last_message = ""  # the last message shown to the user (tests)

    @classmethod
    def install_on(cls, window: QMainWindow) -> CompareController:
        """Add :data:`COMPARE_MENU` to ``window``'s View menu (a Compare menu when there is none)."""
        controller = cls(window)
        menu = next(
            (
                a.menu()
                for a in window.menuBar().actions()
                if a.menu() is not None and a.text().replace("&", "") == "View"
            ),
            None,
        )
        if not isinstance(menu, QMenu):
            menu = window.menuBar().addMenu("&Compare")
        else:
            menu.addSeparator()
        add_entries(menu, window, controller, COMPARE_MENU)
        return controller

    def _entry(self) -> ImageEntry | None:
        entry = self.window.current_entry()  # type: ignore[attr-defined]
        if entry is None:
            self._say("Compare", "Select an image first.")
        return entry

    def _say(self, title: str, text: str) -> None:
        box = QMessageBox(QMessageBox.Icon.Information, title, text, QMessageBox.StandardButton.Ok, self.window)
        box.setObjectName("compareMessage")
        box.setModal(False)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.show()
        self.last_message = text

    def _open(self, current: ComparedImage, choices: list[ComparedImage], sync: bool) -> CompareWindow:
        view = CompareWindow(current, choices, sync=sync, parent=self.window)
        view.destroyed.connect(lambda _o=None, v=view: self.windows.remove(v) if v in self.windows else None)
        self.windows.append(view)
        view.show()
        return view

    # -- priors ---------------------------------------------------------------------------------
    def compare_with_prior(self) -> FunctionJob | None:
        """Find the priors in a worker thread (the database's files are read again), then open the window."""
        from pneumoview.priors import priors_for, usable_patient_id

        entry = self._entry()
        if entry is None:
            return None
        if not usable_patient_id(entry.record.patient_id):
            self._say(
                "No priors",
                "This image has no usable Patient ID (empty or anonymised). Priors are matched by Patient ID "
                "(and its issuer) only, so none can be found.",
            )
            return None
        records = [e.record for e in self.window.session.entries.values()]  # type: ignore[attr-defined]
        store = getattr(self.window, "result_store", None)
        job = FunctionJob(lambda: priors_for(entry.record, records, store))
        job.signals.finished.connect(lambda studies, e=entry: self._show_priors(e, studies))
        job.signals.failed.connect(lambda message: self._say("Priors not found", message))
        self._jobs = [j for j in self._jobs if not j.done.is_set()] + [job]
        start(job, getattr(self.window, "pool", None))
        return job

    def _show_priors(self, entry: ImageEntry, studies: list[StudyOnFile]) -> CompareWindow | None:
        if not studies:
            self._say(
                "No priors",
                "No earlier study of this worker was found among the open images or in the results database "
                "(matched by Patient ID and Issuer of Patient ID).",
            )
            return None
        return self._open(current_side(entry), [prior_choice(s) for s in studies], sync=True)

    # -- ILO standards ----------------------------------------------------------------------------
    def compare_with_standard(self) -> CompareWindow | None:
        from pneumoview.standards import list_standards

        entry = self._entry()
        if entry is None:
            return None
        try:
            standards = list_standards(self.window.settings.ilo_standards_folder)  # type: ignore[attr-defined]
        except PneumoViewError as exc:
            self._say("ILO standard images", exc.message)
            return None
        choices = [
            ComparedImage(s.path, ROLE_STANDARD, s.name, "" if s.known else "(name not recognised)") for s in standards
        ]
        return self._open(current_side(entry), choices, sync=False)
