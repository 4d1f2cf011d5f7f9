"""Model manager: the registry's bundles in a table; activate, roll back, remove (``pneumoview models``).

Each row shows a bundle's name and registry id, when it was added and created, its training
metrics, a DEMO tag for demo-weight models and the base-weight fingerprints it was trained on;
the active one is marked. Every action goes through :class:`pneumoview.registry.ModelRegistry`,
the same calls ``pneumoview models activate / rollback / remove`` make, so the window, the CLI
and other processes always agree; ``modelActivated(id)`` tells the main window, which resolves
the active model afresh at the next analysis anyway.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from pneumoview.errors import PneumoViewError
from pneumoview.registry import BundleEntry, ModelRegistry, format_metrics

COLUMNS = ("", "Name", "Id", "Added", "Created", "Metrics", "Demo", "Base fingerprints")
COL_ACTIVE, COL_NAME, COL_ID, COL_ADDED, COL_CREATED, COL_METRICS, COL_DEMO, COL_BASE = range(len(COLUMNS))
ACTIVE_MARK = "\u2713 active"
DEMO_TAG = "DEMO"


def format_fingerprints(fingerprints: dict[str, str]) -> str:
    """``clip 1a2b3c4d5e6f, llama 9f8e7d6c5b4a`` (first 12 hex digits), or ``unknown``."""
    return ", ".join(f"{k} {v[:12]}" for k, v in sorted(fingerprints.items())) or "unknown"


def _ask(parent: QWidget, text: str) -> bool:
    answer = QMessageBox.question(
        parent,
        "Remove model",
        text,
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes


class ModelManagerDialog(QDialog):
    """The registry's bundles; activate / roll back / remove. ``confirm(text)`` asks before removing."""

    modelActivated = Signal(str)  # registry id now active

    def __init__(
        self,
        parent: QWidget | None = None,
        *,
        registry: ModelRegistry | None = None,
        confirm: Callable[[str], bool] | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Model manager")
        self.setMinimumSize(960, 360)
        self.registry = registry or ModelRegistry()
        self._confirm = confirm or (lambda text: _ask(self, text))
        self.entries: list[BundleEntry] = []
        self.active_id: str | None = None
        layout = QVBoxLayout(self)
        self.demo_note = QLabel("")
        self.demo_note.setObjectName("demoNote")
        self.demo_note.setWordWrap(True)
        layout.addWidget(self.demo_note)
        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        layout.addWidget(self.table)
        self.message = QLabel("")
        self.message.setObjectName("managerMessage")
        self.message.setWordWrap(True)
        layout.addWidget(self.message)
        row = QHBoxLayout()
        self.activate_button = QPushButton("Activate")
        self.rollback_button = QPushButton("Roll back to the previous model")
        self.remove_button = QPushButton("Remove...")
        self.refresh_button = QPushButton("Refresh")
        for button in (self.activate_button, self.rollback_button, self.remove_button, self.refresh_button):
            row.addWidget(button)
        row.addStretch(1)
        layout.addLayout(row)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.activate_button.clicked.connect(self.activate_selected)
        self.rollback_button.clicked.connect(self.rollback)
        self.remove_button.clicked.connect(self.remove_selected)
        self.refresh_button.clicked.connect(self.refresh)
        self.refresh()

    # ------------------------------------------------------------------ reading
    def refresh(self) -> None:
        """Re-read the registry (another process may have changed it)."""
        selected = self.selected_id()
        try:
            self.entries = self.registry.list()
            self.active_id = self.registry.active_id()
            demo = self.registry.demo_chosen()
            history = self.registry.history()
        except PneumoViewError as exc:
            self.entries, self.active_id, demo, history = [], None, False, []
            self._say(exc.message, error=True)
        self.demo_note.setText(
            "The built-in demo model is in use (random weights: not a diagnosis). Activate a bundle to use it instead."
            if demo
            else ""
        )
        self.demo_note.setVisible(demo)
        self.table.setRowCount(len(self.entries))
        for row, entry in enumerate(self.entries):
            self._fill_row(row, entry)
        if selected is not None:
            self.select_id(selected)
        self.rollback_button.setEnabled(any(i != self.active_id for i in history))
        self._update_buttons()

    def _fill_row(self, row: int, entry: BundleEntry) -> None:
        cells = {
            COL_ACTIVE: ACTIVE_MARK if entry.id == self.active_id else "",
            COL_NAME: entry.name,
            COL_ID: entry.id,
            COL_ADDED: entry.added_at[:19].replace("T", " "),
            COL_CREATED: entry.created[:19].replace("T", " "),
            COL_METRICS: format_metrics(entry.metrics) or "-",
            COL_DEMO: DEMO_TAG if entry.demo else "",
            COL_BASE: format_fingerprints(entry.base_fingerprints),
        }
        for column, text in cells.items():
            item = QTableWidgetItem(text)
            item.setData(Qt.ItemDataRole.UserRole, entry.id)
            if column == COL_BASE:
                item.setToolTip("\n".join(f"{k}: {v}" for k, v in sorted(entry.base_fingerprints.items())))
            elif column == COL_NAME and entry.source:
                item.setToolTip(f"from {entry.source}" + (f"\n{entry.note}" if entry.note else ""))
            if entry.id == self.active_id:
                font = item.font()
                font.setBold(True)
                item.setFont(font)
            self.table.setItem(row, column, item)

    def selected_id(self) -> str | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows:
            return None
        item = self.table.item(rows[0].row(), COL_ID)
        return item.text() if item is not None else None

    def select_id(self, bundle_id: str) -> bool:
        for row, entry in enumerate(self.entries):
            if entry.id == bundle_id:
                self.table.selectRow(row)
                return True
        return False

    def row_texts(self) -> list[list[str]]:
        """The table as text, row by row (what the user reads)."""
        return [[self.table.item(r, c).text() for c in range(len(COLUMNS))] for r in range(self.table.rowCount())]

    # ------------------------------------------------------------------ actions
    def _update_buttons(self) -> None:
        selected = self.selected_id()
        self.activate_button.setEnabled(
            selected is not None and (selected != self.active_id or self.demo_note.isVisibleTo(self))
        )
        self.remove_button.setEnabled(selected is not None and selected != self.active_id)

    def _say(self, text: str, *, error: bool = False) -> None:
        self.message.setStyleSheet("color:#b00020" if error else "color:#1b5e20")
        self.message.setText(text)

    def activate_selected(self) -> None:
        bundle_id = self.selected_id()
        if bundle_id is None:
            return
        try:
            entry = self.registry.activate(bundle_id)
        except PneumoViewError as exc:
            self._say(f"Not activated: {exc.message}", error=True)
            return
        self.refresh()
        self._say(f"{entry.name} is now the active model; the next analysis uses it.")
        self.modelActivated.emit(entry.id)

    def rollback(self) -> None:
        try:
            entry = self.registry.rollback()
        except PneumoViewError as exc:
            self._say(f"Cannot roll back: {exc.message}", error=True)
            return
        self.refresh()
        self.select_id(entry.id)
        self._say(f"Rolled back: {entry.name} is the active model again.")
        self.modelActivated.emit(entry.id)

    def remove_selected(self) -> None:
        bundle_id = self.selected_id()
        if bundle_id is None:
            return
        if not self._confirm(f"Delete the model {bundle_id} from this computer? This cannot be undone."):
            return
        try:
            self.registry.remove(bundle_id)
        except PneumoViewError as exc:
            self._say(f"Not removed: {exc.message}", error=True)
            return
        self.refresh()
        self._say(f"Removed {bundle_id}.")
