"""Export dialog: where to write the CSV report and what it may contain (pseudonymise, names, paths)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

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
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from pneumoview.settings import Settings, ensure_pseudonymise_key

if TYPE_CHECKING:
    from pneumoview.report import ExportOptions

DELIMITERS = ((",", "Comma (,)"), (";", "Semicolon (;) - Excel with a decimal comma"), ("\t", "Tab"))


class ExportDialog(QDialog):
    """Asks for the file and the options of :class:`pneumoview.report.ExportOptions`."""

    def __init__(
        self,
        parent: QWidget | None,
        settings: Settings,
        *,
        selected_count: int | None = None,
        settings_path: Path | None = None,
    ) -> None:
        super().__init__(parent)
        self.settings = settings
        self.settings_path = settings_path
        self.setWindowTitle("Export selected images to CSV" if selected_count is not None else "Export all to CSV")
        layout = QVBoxLayout(self)
        scope = (
            f"{selected_count} selected image(s)"
            if selected_count is not None
            else "every analysed or reviewed image in the results database"
        )
        layout.addWidget(QLabel(f"Exports {scope}: model results and reviewer decisions."))
        form = QFormLayout()
        folder = settings.export.last_directory or str(Path.home())
        stamp = datetime.now().strftime("%Y%m%d-%H%M")
        self.path_edit = QLineEdit(str(Path(folder) / f"pneumoview-report-{stamp}.csv"))
        browse = QPushButton("Browse...")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.path_edit, 1)
        row.addWidget(browse)
        form.addRow("File", row)
        self.pseudonymise = QCheckBox(
            "Pseudonymise (keyed hashes of patient ID, study UID, accession; no names, paths or comments)"
        )
        self.pseudonymise.setChecked(settings.export.pseudonymise)
        self.include_names = QCheckBox("Include patient names")
        self.include_names.setChecked(settings.export.include_names)
        self.include_paths = QCheckBox("Include source file paths")
        self.include_paths.setChecked(settings.export.include_source_path)
        self.delimiter = QComboBox()
        for value, text in DELIMITERS:
            self.delimiter.addItem(text, value)
        self.delimiter.setCurrentIndex(
            max(
                0,
                [d for d, _ in DELIMITERS].index(settings.export.delimiter)
                if settings.export.delimiter in [d for d, _ in DELIMITERS]
                else 0,
            )
        )
        form.addRow("", self.pseudonymise)
        form.addRow("", self.include_names)
        form.addRow("", self.include_paths)
        form.addRow("Separator", self.delimiter)
        layout.addLayout(form)
        self.pseudonymise.toggled.connect(self._sync)
        self._sync(self.pseudonymise.isChecked())
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Export")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def _sync(self, pseudonymise: bool) -> None:
        self.include_names.setEnabled(not pseudonymise)
        self.include_paths.setEnabled(not pseudonymise)

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export CSV", self.path_edit.text(), "CSV (*.csv)")
        if path:
            self.path_edit.setText(path)

    def target_path(self) -> Path:
        return Path(self.path_edit.text()).expanduser()

    def options(self) -> ExportOptions:
        """:class:`pneumoview.report.ExportOptions`; the key is created once and kept in settings."""
        from pneumoview.report import ExportOptions

        pseudonymise = self.pseudonymise.isChecked()
        key = ensure_pseudonymise_key(self.settings, self.settings_path) if pseudonymise else None
        self.settings.export.pseudonymise = pseudonymise
        self.settings.export.include_names = self.include_names.isChecked()
        self.settings.export.include_source_path = self.include_paths.isChecked()
        self.settings.export.delimiter = self.delimiter.currentData()
        return ExportOptions(
            pseudonymise=pseudonymise,
            key=key,
            include_names=self.include_names.isChecked(),
            include_source_path=self.include_paths.isChecked(),
            delimiter=self.delimiter.currentData(),
        )
