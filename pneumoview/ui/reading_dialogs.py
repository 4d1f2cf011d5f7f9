"""Reader sign-in, the reading dialog (form + blinding), the arbitration queue, and the Reading menu
as a data table. Thin adapters over :class:`pneumoview.reading.repository.ReadingRepository`:
every rule (validation, blinding, final determination) is decided there, never here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from pneumoview.errors import PneumoViewError
from pneumoview.reading.export import ReadingExportSummary, reading_cells
from pneumoview.reading.ilo import Reading
from pneumoview.reading.repository import ReadingRepository
from pneumoview.reading.rules import AiSuggestion, FinalRule
from pneumoview.ui.menus import MenuEntry, add_entries
from pneumoview.ui.reading_form import ReadingForm, named


class ReaderSignInDialog(QDialog):
    """Sign in by name (known readers offered; a new name registers a reader)."""

    def __init__(self, repo: ReadingRepository, parent: QWidget | None = None, current: str = "") -> None:
        super().__init__(parent)
        self.setWindowTitle("Sign in as reader")
        self.repo = repo
        self.reader = ""
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Your name (readings are stored under it):"))
        self.name = named(QComboBox(), "reader_name")
        self.name.setEditable(True)
        self.name.addItems(repo.readers())
        self.name.setCurrentText(current)
        layout.addWidget(self.name)
        self.error = named(QLabel(wordWrap=True), "sign_in_error")
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
    return (
        f"{reader} ({when[:16].replace('T', ' ')}): quality {cells['film_quality']}, profusion "
        f"{cells['profusion'] or '-'}, shape {shapes}, zones {cells['zones'] or '-'}, large "
        f"{cells['large_opacities'] or '-'}, pleural {cells['pleural_abnormalities'] or '-'}, symbols "
        f"{cells['symbols'] or '-'}"
    )


class ReadingPanel(QWidget):
    """One reader's ILO form for one study, with the AI suggestion and, once submitted, the others'
    readings and the final determination. Used by :class:`ReadingDialog` and docked in the main window
    (:mod:`pneumoview.ui.reading_dock`), which switches it from study to study with :meth:`set_study`."""

    saved = Signal(object)  # SubmittedReading

    def __init__(self, parent: QWidget | None = None, *, compact: bool = False) -> None:
        super().__init__(parent)
        self.repo: ReadingRepository | None = None
        self.study_uid, self.reader = "", ""
        self.ai: AiSuggestion | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.form = ReadingForm(self, compact=compact)
        layout.addWidget(self.form)
        self.others = named(QPlainTextEdit(readOnly=True), "other_readings")
        self.others.setTabChangesFocus(True)
        self.others.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.final = named(QLabel(wordWrap=True), "final_determination")
        self.form.side_panel.addWidget(QLabel("<b>Other readers</b>"))
        self.form.side_panel.addWidget(self.others)
        self.form.side_panel.addWidget(self.final)
        self.form.submitted.connect(self._submit)

    def set_study(self, repo: ReadingRepository, study_uid: str, reader: str) -> None:
        """Show ``reader``'s latest reading of ``study_uid`` (an empty form when there is none)."""
        self.repo, self.study_uid, self.reader = repo, study_uid, reader
        self.ai = repo.ai_suggestion(study_uid)
        self.form.set_ai_suggestion(self.ai)
        own = repo.latest_of(study_uid, reader)
        if own is not None:
            self.form.set_reading(own.reading)
        else:
            self.form.clear()
        self._refresh_others()

    def _refresh_others(self) -> None:
        repo = self.repo
        if repo is None:
            return
        visible = [r for r in repo.visible_to(self.study_uid, self.reader) if r.reader != self.reader]
        if repo.latest_of(self.study_uid, self.reader) is None:
            self.others.setPlainText("Hidden until you submit your own reading.")
            self.final.setText("")
            return
        lines = [reading_summary(r.reader, r.submitted_at, reading_cells(r.reading)) for r in visible]
        self.others.setPlainText("\n\n".join(lines) or "No other reading yet.")
        self.final.setText(f"Final determination: {repo.final(self.study_uid).text()}")

    def _submit(self, reading: Reading) -> None:
        if self.repo is None:
            return
        try:
            submitted = self.repo.submit(self.study_uid, self.reader, reading, ai=self.ai)
        except PneumoViewError as exc:
            self.form.messages.setText(exc.message)
            return
        self._refresh_others()
        self.form.messages.setText("")
        self.saved.emit(submitted)


class ReadingDialog(QDialog):
    """:class:`ReadingPanel` in a dialog of its own (Reading > Read Selected Study)."""

    def __init__(self, repo: ReadingRepository, study_uid: str, reader: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.repo, self.study_uid, self.reader = repo, study_uid, reader
        self.setWindowTitle(f"ILO reading - {reader}")
        layout = QVBoxLayout(self)
        self.panel = ReadingPanel(self)
        layout.addWidget(self.panel)
        self.panel.set_study(repo, study_uid, reader)
        self.form, self.others, self.final, self.saved = (
            self.panel.form,
            self.panel.others,
            self.panel.final,
            self.panel.saved,
        )
        self.ai = self.panel.ai
        self.form.quality.setFocus()


class ArbitrationQueueDialog(QDialog):
    """Studies waiting for a third reader (those this reader may arbitrate); Enter opens one."""

    chosen = Signal(str)

    def __init__(self, repo: ReadingRepository, reader: str | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Arbitration queue")
        layout = QVBoxLayout(self)
        self.list = named(QListWidget(), "arbitration_list")
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


class ExportReadingsDialog(QDialog):
    """CSV of every reading (and optionally a PDF page per study), pseudonymised on request."""

    def __init__(
        self, repo: ReadingRepository, key_provider: Callable[[], bytes], parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export readings")
        self.repo, self.key_provider = repo, key_provider
        self.summary: ReadingExportSummary | None = None
        layout = QFormLayout(self)
        self.csv_path = named(QLineEdit(placeholderText="readings.csv"), "csv_path")
        self.pdf_dir = named(QLineEdit(placeholderText="(optional) folder for one PDF per study"), "pdf_dir")
        self.pseudonymise = named(QCheckBox("Pseudonymise (keyed hashes; no names, no free text)"), "pseudonymise")
        browse = QPushButton("Browse...")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.csv_path)
        row.addWidget(browse)
        layout.addRow("CSV file", row)
        layout.addRow("PDF folder", self.pdf_dir)
        layout.addRow(self.pseudonymise)
        self.error = named(QLabel(wordWrap=True), "export_error")
        self.error.setStyleSheet("color: #b00020;")
        layout.addRow(self.error)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addRow(buttons)

    def _browse(self) -> None:
        path, _filter = QFileDialog.getSaveFileName(self, "Export readings", "readings.csv", "CSV (*.csv)")
        if path:
            self.csv_path.setText(path)

    def accept(self) -> None:
        from pneumoview.reading.export import export_readings_csv
        from pneumoview.reading.pdf import write_study_pdfs

        if not self.csv_path.text().strip():
            self.error.setText("choose the CSV file to write")
            return
        pseudo = self.pseudonymise.isChecked()
        try:
            key = self.key_provider() if pseudo else None
            self.summary = export_readings_csv(
                Path(self.csv_path.text().strip()), self.repo, pseudonymise=pseudo, key=key
            )
            if self.pdf_dir.text().strip():
                write_study_pdfs(Path(self.pdf_dir.text().strip()), self.repo, pseudonymise=pseudo, key=key)
        except PneumoViewError as exc:
            self.error.setText(exc.message)
            return
        super().accept()


# --------------------------------------------------------------------------- the menu, as data
READING_MENU: tuple[MenuEntry, ...] = (
    MenuEntry("sign_in", "Sign &In as Reader...", "Ctrl+Shift+I"),
    MenuEntry("read_selected", "&Read Selected Study (ILO)...", "Ctrl+Shift+L"),
    MenuEntry("arbitration_queue", "&Arbitration Queue..."),
    MenuEntry("agreement", "Reader A&greement..."),
    MenuEntry("export_readings", "&Export Readings..."),
)


class ReadingMenuController:
    """Opens the reading dialogs for a window; ``repo`` and ``study`` are callables so the window
    stays the owner of its database and its selection."""

    def __init__(
        self,
        parent: QWidget,
        repo: Callable[[], ReadingRepository | None],
        study: Callable[[], str | None],
        key_provider: Callable[[], bytes] | None = None,
    ) -> None:
        self.parent, self._repo, self._study = parent, repo, study
        self.rule: FinalRule | None = None  # None: the default rule (see pneumoview.reading.rules)
        self.suggested_name = ""  # offered in the sign-in dialog (the app's reviewer name)
        self.key_provider = key_provider or _settings_key
        self.reader = ""

    @classmethod
    def install_on(cls, window: QMainWindow) -> ReadingMenuController:
        """The Reading menu for PneumoView's main window: its ``result_store`` and the study of
        its ``current_entry()`` (Study Instance UID (0020,000D) of the image on screen)."""

        def repo() -> ReadingRepository | None:
            store = getattr(window, "result_store", None)
            return ReadingRepository(store) if store is not None else None

        def study() -> str | None:
            entry = window.current_entry()  # type: ignore[attr-defined]
            return str(getattr(entry.record, "study_uid", "") or "") or None if entry is not None else None

        def key() -> bytes:
            from pneumoview.settings import ensure_pseudonymise_key

            return ensure_pseudonymise_key(window.settings, window.settings_path)  # type: ignore[attr-defined]

        controller = cls(window, repo, study, key)
        controller.suggested_name = str(getattr(getattr(window, "settings", None), "reviewer_name", "") or "")
        controller.install(window)
        return controller

    def install(self, window: QMainWindow, title: str = "&Reading") -> QMenu:
        menu = window.menuBar().addMenu(title)
        add_entries(menu, window, self, READING_MENU)
        return menu

    def _repository(self) -> ReadingRepository | None:
        repo = self._repo()
        if repo is not None and self.rule is not None:
            repo.rule = self.rule
        return repo

    def sign_in(self) -> bool:
        repo = self._repository()
        if repo is None:
            return False
        dialog = ReaderSignInDialog(repo, self.parent, self.reader or self.suggested_name)
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
        from pneumoview.ui.agreement_dialog import AgreementDialog  # matplotlib: only when asked for

        repo = self._repository()
        if repo is not None:
            AgreementDialog.from_repository(repo, self.parent, reader=self.reader or None).exec()

    def export_readings(self) -> None:
        repo = self._repository()
        if repo is not None:
            ExportReadingsDialog(repo, self.key_provider, self.parent).exec()


def _settings_key() -> bytes:
    from pneumoview.settings import ensure_pseudonymise_key, load_settings

    return ensure_pseudonymise_key(load_settings())
