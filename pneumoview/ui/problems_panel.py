"""The "problems" list: files that could not be read, with path and reason (never blocking the rest)."""

from __future__ import annotations

from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem, QWidget


class ProblemsPanel(QTableWidget):
    """Two columns, path and reason; rows are added as scans report problems."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, 3, parent)
        self.setHorizontalHeaderLabels(["File", "Reason", "Kind"])
        self.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        self.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.setColumnWidth(0, 360)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSortingEnabled(True)
        self.verticalHeader().hide()

    def add_problems(self, problems: Iterable[Any]) -> None:
        self.setSortingEnabled(False)
        for problem in problems:
            row = self.rowCount()
            self.insertRow(row)
            path_item = QTableWidgetItem(str(problem.path))
            path_item.setToolTip(str(problem.path))
            self.setItem(row, 0, path_item)
            reason = QTableWidgetItem(problem.reason)
            reason.setToolTip(problem.reason)
            self.setItem(row, 1, reason)
            self.setItem(row, 2, QTableWidgetItem(getattr(problem, "code", "")))
        self.setSortingEnabled(True)

    def add_message(self, path: str, reason: str, kind: str = "analysis") -> None:
        """A problem found later (e.g. an image that could not be prepared for the model)."""
        self.add_problems([SimpleNamespace(path=path, reason=reason, code=kind)])

    def problems(self) -> list[tuple[str, str]]:
        return [(self.item(r, 0).text(), self.item(r, 1).text()) for r in range(self.rowCount())]
