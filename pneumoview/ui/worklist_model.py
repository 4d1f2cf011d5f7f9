"""The flat worklist as a Qt table: a thin adapter over :mod:`pneumoview.worklist` rows and filters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QItemSelectionModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from PySide6.QtWidgets import QAbstractItemView, QComboBox, QHBoxLayout, QLabel, QTableView, QVBoxLayout, QWidget

from pneumoview.ui.study_model import refilter
from pneumoview.worklist import FILTERS, WorklistRow, matches

COLUMNS = ("Worker name", "Worker ID", "Study date", "View", "AI score", "AI label", "Reading status")
KEY_ROLE = Qt.ItemDataRole.UserRole + 1
_ROOT = QModelIndex()


def _cell(row: WorklistRow, column: int) -> str:
    values = (
        row.worker_name,
        row.worker_id,
        row.study_date,
        row.view,
        f"{row.score:.2f}" if row.score is not None else "",
        row.ai_label,
        row.reading_status,
    )
    return values[column]


class WorklistModel(QAbstractTableModel):
    """Rows of :func:`pneumoview.worklist.build_rows`, replaced whole by :meth:`set_rows`."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.rows: list[WorklistRow] = []

    def set_rows(self, rows: Sequence[WorklistRow]) -> None:
        self.beginResetModel()
        self.rows = list(rows)
        self.endResetModel()

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = _ROOT) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = _ROOT) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:  # noqa: N802
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            return _cell(row, index.column())
        if role == KEY_ROLE:
            return row.key
        if role == Qt.ItemDataRole.UserRole and index.column() == 4:  # sort scores as numbers
            return row.score if row.score is not None else -1.0
        return None


class WorklistProxy(QSortFilterProxyModel):
    """Sorting, and one of the :data:`pneumoview.worklist.FILTERS` for the signed-in reader."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.filter_id = "all"
        self.reader: str | None = None

    def set_filter(self, filter_id: str, reader: str | None = None) -> None:
        def change() -> None:
            self.filter_id, self.reader = filter_id, reader

        refilter(self, change)

    def filterAcceptsRow(self, source_row: int, source_parent: QModelIndex | QPersistentModelIndex) -> bool:  # noqa: N802
        model = self.sourceModel()
        assert isinstance(model, WorklistModel)
        return matches(model.rows[source_row], self.filter_id, self.reader)

    def lessThan(self, left: QModelIndex | QPersistentModelIndex, right: QModelIndex | QPersistentModelIndex) -> bool:  # noqa: N802
        if left.column() == 4:
            return float(left.data(Qt.ItemDataRole.UserRole)) < float(right.data(Qt.ItemDataRole.UserRole))
        return str(left.data()) < str(right.data())


class WorklistPanel(QWidget):
    """Filter picker and table; ``imageChosen`` carries the image key of the row made current."""

    imageChosen = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = WorklistModel(self)
        self.proxy = WorklistProxy(self)
        self.proxy.setSourceModel(self.model)
        self.reader: str | None = None
        self.filter_combo = QComboBox()
        self.filter_combo.setObjectName("worklistFilter")
        for filter_id, title, _predicate in FILTERS:
            self.filter_combo.addItem(title, filter_id)
        self.filter_combo.currentIndexChanged.connect(lambda _i: self._apply_filter())
        self.table = QTableView()
        self.table.setObjectName("worklist")
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(-1, Qt.SortOrder.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.verticalHeader().setDefaultSectionSize(self.table.fontMetrics().height() + 6)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.table.selectionModel().currentRowChanged.connect(self._on_current)
        top = QHBoxLayout()
        top.addWidget(QLabel("Show:"))
        top.addWidget(self.filter_combo, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.table)

    def set_rows(self, rows: Sequence[WorklistRow], reader: str | None) -> None:
        self.reader = reader or None
        self.model.set_rows(rows)
        self._apply_filter()
        self.table.resizeColumnsToContents()
        for column in range(len(COLUMNS)):
            self.table.setColumnWidth(column, min(self.table.columnWidth(column), 110 if column == 0 else 140))

    def _apply_filter(self) -> None:
        self.proxy.set_filter(str(self.filter_combo.currentData()), self.reader)

    def set_filter(self, filter_id: str) -> None:
        self.filter_combo.setCurrentIndex(self.filter_combo.findData(filter_id))

    def visible_keys(self) -> list[str]:
        return [self.proxy.index(r, 0).data(KEY_ROLE) for r in range(self.proxy.rowCount())]

    def select_key(self, key: str | None) -> None:
        """Make ``key``'s row current without emitting ``imageChosen`` (the window already shows it)."""
        for r in range(self.proxy.rowCount()):
            index = self.proxy.index(r, 0)
            if index.data(KEY_ROLE) == key:
                self.table.selectionModel().blockSignals(True)
                self.table.selectionModel().setCurrentIndex(
                    index, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows
                )
                self.table.selectionModel().blockSignals(False)
                self.table.scrollTo(index)
                return

    def _on_current(self, current: QModelIndex, _previous: QModelIndex) -> None:
        key = current.data(KEY_ROLE) if current.isValid() else None
        if key:
            self.imageChosen.emit(key)


__all__ = ["COLUMNS", "WorklistModel", "WorklistPanel", "WorklistProxy"]
