"""DICOM tags of the selected image (header only, read in a worker, shown as a tree)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QThreadPool
from PySide6.QtWidgets import QLineEdit, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

from pneumoview.ui.workers import FunctionJob, start

MAX_VALUE_CHARS = 200


def read_tags(path: Path) -> list[tuple[str, str, str, str, list[Any]]]:
    """(tag, name, VR, value, children) rows of the header of ``path`` (``stop_before_pixels``).

    Header reading only, through the scan's bounded read-only reader
    (:func:`pneumoview.dicom.scan.read_header`: regular files only, bounded reads and inflation);
    pixel data are never read here. Raises DicomReadError for an unreadable header.
    """
    from pneumoview.dicom.pictures import NO_DICOM_HEADER, is_picture_file, picture_header
    from pneumoview.dicom.scan import PARSER_ERRORS, header_read_error, read_header

    if is_picture_file(path):  # PNG/JPEG/TIFF: no tags to list, say what it is instead
        fmt, width, height, bits = picture_header(Path(path))
        return [("", NO_DICOM_HEADER, "", f"{fmt} picture, {width} x {height}, {bits} bits", [])]
    try:
        ds = read_header(Path(path))
    except PARSER_ERRORS as exc:
        raise header_read_error(exc, Path(path)) from exc

    def rows(dataset: Any) -> list[tuple[str, str, str, str, list[Any]]]:
        out = []
        for elem in dataset:
            tag = f"({elem.tag.group:04X},{elem.tag.element:04X})"
            if elem.VR == "SQ":
                children = []
                for i, item in enumerate(elem.value):
                    children.append((f"Item {i + 1}", "", "", "", rows(item)))
                out.append((tag, elem.name, "SQ", f"{len(elem.value)} item(s)", children))
            else:
                value = elem.repval if elem.VR in ("OB", "OW", "OF", "OD", "OL", "UN") else str(elem.value)
                if len(value) > MAX_VALUE_CHARS:
                    value = value[:MAX_VALUE_CHARS] + "..."
                out.append((tag, elem.name, str(elem.VR), value, []))
        return out

    meta = [("File meta", "", "", "", rows(ds.file_meta))] if getattr(ds, "file_meta", None) else []
    return meta + rows(ds)


class TagsPanel(QWidget):
    """Tree of (tag, name, VR, value) with a filter box."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter tags (name, tag or value)")
        self.filter.textChanged.connect(self._apply_filter)
        layout.addWidget(self.filter)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Tag", "Name", "VR", "Value"])
        self.tree.setColumnWidth(0, 100)
        self.tree.setColumnWidth(1, 200)
        self.tree.setColumnWidth(2, 36)
        layout.addWidget(self.tree)
        self._path: Path | None = None
        self._jobs: list[FunctionJob] = []
        self.pool: QThreadPool | None = None  # None = the global pool

    def show_path(self, path: Path | None) -> None:
        self._path = Path(path) if path is not None else None
        self.tree.clear()
        if path is None:
            return
        job = FunctionJob(read_tags, Path(path), wanted=lambda p=Path(path): self._path == p)
        job.signals.finished.connect(lambda rows, p=Path(path): self._on_rows(p, rows))
        job.signals.failed.connect(lambda msg: self._on_rows(self._path, [("", "error", "", msg, [])]))
        self._jobs = [j for j in self._jobs if not j.done.is_set()] + [job]
        start(job, self.pool)

    def _on_rows(self, path: Path | None, rows: list[Any]) -> None:
        if path != self._path:
            return
        self.tree.clear()

        def add(parent: Any, items: list[Any]) -> None:
            for tag, name, vr, value, children in items:
                item = QTreeWidgetItem([tag, name, vr, value])
                item.setToolTip(3, value)
                if parent is None:
                    self.tree.addTopLevelItem(item)
                else:
                    parent.addChild(item)
                add(item, children)

        add(None, rows)
        self._apply_filter(self.filter.text())

    def _apply_filter(self, text: str) -> None:
        words = text.strip().lower()
        for i in range(self.tree.topLevelItemCount()):
            self._filter_item(self.tree.topLevelItem(i), words)

    def _filter_item(self, item: QTreeWidgetItem, words: str) -> bool:
        own = not words or any(words in item.text(c).lower() for c in range(4))
        child_visible = False
        for i in range(item.childCount()):
            child_visible |= self._filter_item(item.child(i), words if not own else "")
        visible = own or child_visible
        item.setHidden(not visible)
        return visible

    def rows_text(self) -> list[str]:
        """Visible top-level rows as "tag name = value" (tests, copy)."""
        out = []
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            if not item.isHidden():
                out.append(f"{item.text(0)} {item.text(1)} = {item.text(3)}")
        return out


__all__ = ["TagsPanel", "read_tags"]
