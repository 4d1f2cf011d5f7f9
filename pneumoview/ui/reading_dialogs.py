"""Reader sign-in, the reading dialog (form + blinding), the arbitration queue, and the Reading menu
as a data table. Thin adapters over :class:`pneumoview.reading.repository.ReadingRepository`:
every rule (validation, blinding, final determination) is decided there, never here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMenu,
    QPlainTextEdit,
    QVBoxLayout,
    QWidget,
)

from pneumoview.errors import PneumoViewError
from pneumoview.reading.export import reading_cells
from pneumoview.reading.ilo import Reading
from pneumoview.reading.repository import ReadingRepository
from pneumoview.ui.reading_form import ReadingForm


class ReaderSignInDialog(QDialog):
    """Sign in by name (known readers offered; a new name registers a reader)."""

    def __init__(self, repo: ReadingRepository, parent: QWidget | None = None, current: str = "") -> None:
        super().__init__(parent)
        self.setWindowTitle("Sign in as reader")
        self.repo = repo
        self.reader = ""
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Your name (readings are stored under it):"))
        self.name = QComboBox(objectName="reader_name")
        self.name.setEditable(True)
        self.name.addItems(repo.readers())
        self.name.setCurrentText(current)
        layout.addWidget(self.name)
        self.error = QLabel(objectName="sign_in_error", wordWrap=True)
        self.error.setStyleSheet("color: #b00020;")
        layout.addWidget(self.error)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def accept(self) -> None:
        try:
            self.reader = self.repo.sign_in(self.name.currentText())
        except PneumoViewError as exc:
            self.error.setText(exc.reason)
            return
        super().accept()


def reading_summary(reader: str, when: str, cells: dict[str, str]) -> str:
    """Another reader's form as a few lines of text (shown only after one's own submission)."""
    shapes = f"{cells['primary_shape']}/{cells['secondary_shape']}" if cells["primary_shape"] else "-"
    return (f"{reader} ({when[:16].replace('T', ' ')}): quality {cells['film_quality']}, profusion "
            f"{cells['profusion'] or '-'}, shape {shapes}, zones {cells['zones'] or '-'}, large "
            f"{cells['large_opacities'] or '-'}, pleural {cells['pleural_abnormalities'] or '-'}, symbols "
            f"{cells['symbols'] or '-'}")


class ReadingDialog(QDialog):
    """One reader's ILO form for one study, with the AI suggestion and, once submitted, the others."""

    saved = Signal(object)  # SubmittedReading

    def __init__(self, repo: ReadingRepository, study_uid: str, reader: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.repo, self.study_uid, self.reader = repo, study_uid, reader
        self.setWindowTitle(f"ILO reading - {reader}")
        layout = QVBoxLayout(self)
        self.form = ReadingForm(self)
        layout.addWidget(self.form)
        self.ai = repo.ai_suggestion(study_uid)
        self.form.set_ai_suggestion(self.ai)
        self.others = QPlainTextEdit(objectName="other_readings", readOnly=True)
        self.others.setTabChangesFocus(True)
        self.others.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.final = QLabel(objectName="final_determination", wordWrap=True)
        self.form.side_panel.addWidget(QLabel("<b>Other readers</b>"))
        self.form.side_panel.addWidget(self.others)
        self.form.side_panel.addWidget(self.final)
        own = repo.latest_of(study_uid, reader)
        if own is not None:
            self.form.set_reading(own.reading)
        self.form.submitted.connect(self._submit)
        self._refresh_others()
        self.form.quality.setFocus()

    def _refresh_others(self) -> None:
        visible = [r for r in self.repo.visible_to(self.study_uid, self.reader) if r.reader != self.reader]
        if self.repo.latest_of(self.study_uid, self.reader) is None:
            self.others.setPlainText("Hidden until you submit your own reading.")
            self.final.setText("")
            return
        lines = [reading_summary(r.reader, r.submitted_at, reading_cells(r.reading)) for r in visible]
        self.others.setPlainText("\n\n".join(lines) or "No other reading yet.")
        self.final.setText(f"Final determination: {self.repo.final(self.study_uid).text()}")

    def _submit(self, reading: Reading) -> None:
        try:
            submitted = self.repo.submit(self.study_uid, self.reader, reading, ai=self.ai)
        except PneumoViewError as exc:
            self.form.messages.setText(exc.message)
            return
        self._refresh_others()
        self.form.messages.setText("")
        self.saved.emit(submitted)


class ArbitrationQueueDialog(QDialog):
    """Studies waiting for a third reader (those this reader may arbitrate); Enter opens one."""

    chosen = Signal(str)

    def __init__(self, repo: ReadingRepository, reader: str | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Arbitration queue")
        layout = QVBoxLayout(self)
        self.list = QListWidget(objectName="arbitration_list")
        for final in repo.arbitration_queue(reader=reader):
            item = QListWidgetItem(f"{final.study_uid} - read by {', '.join(final.first_readers)}")
            item.setData(Qt.ItemDataRole.UserRole, final.study_uid)
            self.list.addItem(item)
        if self.list.count() == 0:
            layout.addWidget(QLabel("No study waits for arbitration."))
        layout.addWidget(self.list)
        self.list.itemActivated.connect(self._activate)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def study_uids(self) -> list[str]:
        return [self.list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.list.count())]

    def _activate(self, item: QListWidgetItem) -> None:
        self.chosen.emit(item.data(Qt.ItemDataRole.UserRole))
        self.accept()


# --------------------------------------------------------------------------- the menu, as data
@dataclass(frozen=True)
class MenuEntry:
    action: str  # method name on ReadingMenuController
    text: str
    shortcut: str = ""


READING_MENU: tuple[MenuEntry, ...] = (
    MenuEntry("sign_in", "Sign &In as Reader...", "Ctrl+Shift+I"),
    MenuEntry("read_selected", "&Read Selected Study (ILO)...", "Ctrl+Shift+L"),
    MenuEntry("arbitration_queue", "&Arbitration Queue..."),
    MenuEntry("agreement", "Reader A&greement..."),
)


class ReadingMenuController:
    """Opens the reading dialogs for a window; ``repo`` and ``study`` are callables so the window
    stays the owner of its database and its selection."""

    def __init__(self, parent: QWidget, repo: Callable[[], ReadingRepository | None],
                 study: Callable[[], str | None]) -> None:
        self.parent, self._repo, self._study = parent, repo, study
        self.reader = ""

    def install(self, window: QMainWindow, title: str = "&Reading") -> QMenu:
        menu = window.menuBar().addMenu(title)
        for entry in READING_MENU:
            act = QAction(entry.text, window)
            if entry.shortcut:
                act.setShortcut(QKeySequence(entry.shortcut))
            act.triggered.connect(getattr(self, entry.action))
            menu.addAction(act)
        return menu

    def _repository(self) -> ReadingRepository | None:
        return self._repo()

    def sign_in(self) -> bool:
        repo = self._repository()
        if repo is None:
            return False
        dialog = ReaderSignInDialog(repo, self.parent, self.reader)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.reader = dialog.reader
        return bool(self.reader)

    def read_selected(self, study_uid: str | None = None) -> ReadingDialog | None:
        repo = self._repository()
        study_uid = study_uid or self._study()
        if repo is None or not study_uid or (not self.reader and not self.sign_in()):
            return None
        dialog = ReadingDialog(repo, study_uid, self.reader, self.parent)
        dialog.show()
        return dialog

    def arbitration_queue(self) -> None:
        repo = self._repository()
        if repo is None:
            return
        dialog = ArbitrationQueueDialog(repo, self.reader or None, self.parent)
        dialog.chosen.connect(lambda uid: self.read_selected(uid))
        dialog.exec()

    def agreement(self) -> None:
        from pneumoview.ui.agreement_dialog import AgreementDialog

        repo = self._repository()
        if repo is not None:
            AgreementDialog.from_repository(repo, self.parent).exec()
