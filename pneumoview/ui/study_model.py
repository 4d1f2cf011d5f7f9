"""The study browser's Qt models: a thin tree adapter over :class:`pneumoview.session.ReviewSession`.

:class:`StudyTreeModel` shows patient -> study -> series -> image with the key tags, each
image's status (not analysed / analysed / unsupported + reason / reviewed) and AI score.
:class:`StudyFilterProxy` sorts and filters it (free text over the tags, and a status filter).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QAbstractItemModel, QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtGui import QBrush, QColor, QFont

from pneumoview.labels import DEMO_MARK
from pneumoview.report import format_date
from pneumoview.session import ImageEntry, ReviewSession, Status, file_key

KEY_ROLE = Qt.ItemDataRole.UserRole + 1  # image key (images only)
KIND_ROLE = Qt.ItemDataRole.UserRole + 2  # "patient" | "study" | "series" | "image"
SORT_ROLE = Qt.ItemDataRole.UserRole + 3  # value used for sorting
FILTER_ROLE = Qt.ItemDataRole.UserRole + 4  # text searched by the filter

COLUMNS: tuple[str, ...] = (
    "Patient / study / series / image",
    "Status",
    "AI score",
    "Decision",
    "Patient ID",
    "Study date",
    "Accession",
    "Mod.",
    "View",
    "Body part",
)
COL_NAME, COL_STATUS, COL_SCORE, COL_DECISION, COL_PID, COL_DATE, COL_ACC, COL_MOD, COL_VIEW, COL_BODY = range(10)
#: Columns computed from the session (status, score, decision); the others are tag texts.
DYNAMIC_COLUMNS = (COL_STATUS, COL_SCORE, COL_DECISION)


#: The invalid index (the root), as the default argument of the model methods (never mutated).
_ROOT = QModelIndex()


@dataclass(eq=False)
class _Node:
    kind: str
    parent: _Node | None
    row: int
    texts: list[str]  # name, patient ID, date, accession, modality, view, body part
    key: str | None = None  # image key (images)
    children: list[_Node] = field(default_factory=list)

    def image_keys(self) -> list[str]:
        if self.kind == "image":
            return [self.key] if self.key else []
        return [k for child in self.children for k in child.image_keys()]


def refilter(proxy: QSortFilterProxyModel, change: Callable[[], None]) -> None:
    """Apply ``change`` to a proxy's filter state and filter its rows again (``beginFilterChange`` /
    ``endFilterChange`` from Qt 6.10, where ``invalidateFilter`` is deprecated; before, ``invalidateFilter``)."""
    if hasattr(proxy, "beginFilterChange"):
        proxy.beginFilterChange()
        change()
        proxy.endFilterChange(QSortFilterProxyModel.Direction.Rows)
    else:
        change()
        proxy.invalidateFilter()


def score_text(entry: ImageEntry, threshold: float) -> str:
    """The AI score as shown in the table: probability, the label it was given (at its own threshold), DEMO mark.
    ``threshold`` (the settings' one) is not used to relabel: a decision is bound to the label it judged."""
    if not entry.diagnosable:
        code = entry.suitability.code if entry.suitability is not None else ""
        return f"n/a ({code})" if code else "n/a"
    result = entry.result
    if result is None:
        return ""
    if not result.is_analysed:
        return f"- ({result.reason_code})"
    text = f"{result.probability:.2f} {result.label}"
    return f"{text} [{DEMO_MARK}]" if result.demo else text


class StudyTreeModel(QAbstractItemModel):
    """Patient -> study -> series -> image tree over a :class:`ReviewSession` (read-only)."""

    def __init__(self, session: ReviewSession, parent: Any = None) -> None:
        super().__init__(parent)
        self.session = session
        self.threshold = 0.5
        self._root = _Node("root", None, 0, [])
        self._by_key: dict[str, _Node] = {}
        session.reset.connect(lambda _v: self.rebuild())
        session.entries_changed.connect(self.refresh_keys)
        self.rebuild()

    # -- building ----------------------------------------------------------------------------
    def rebuild(self) -> None:
        self.beginResetModel()
        self._root = _Node("root", None, 0, [])
        self._by_key = {}
        for patient in self.session.patients() if self.session.entries else []:
            p = self._add(
                self._root, "patient", [patient.patient_name or "(no name)", patient.patient_id, "", "", "", "", ""]
            )
            for study in patient.studies:
                s = self._add(
                    p,
                    "study",
                    [
                        study.description or "Study",
                        patient.patient_id,
                        format_date(study.study_date),
                        study.accession,
                        "",
                        "",
                        "",
                    ],
                )
                for series in study.series:
                    label = f"Series {series.series_number}" if series.series_number is not None else "Series"
                    if series.description:
                        label += f": {series.description}"
                    se = self._add(
                        s,
                        "series",
                        [
                            label,
                            patient.patient_id,
                            format_date(study.study_date),
                            study.accession,
                            series.modality,
                            "",
                            "",
                        ],
                    )
                    for record in series.images:
                        key = file_key(record)
                        name = record.path.name
                        if record.instance_number is not None:
                            name = f"#{record.instance_number}  {name}"
                        node = self._add(
                            se,
                            "image",
                            [
                                name,
                                record.patient_id,
                                format_date(record.study_date),
                                record.accession,
                                record.modality,
                                record.view_position,
                                record.body_part,
                            ],
                            key=key,
                        )
                        self._by_key[key] = node
        self.endResetModel()

    def _add(self, parent: _Node, kind: str, texts: list[str], key: str | None = None) -> _Node:
        node = _Node(kind, parent, len(parent.children), texts, key)
        parent.children.append(node)
        return node

    def set_threshold(self, threshold: float) -> None:
        self.threshold = threshold
        self.refresh_keys(list(self._by_key))

    def refresh_keys(self, keys: list[str]) -> None:
        """Tell views that the status / score / decision of these images (and their parents) changed.

        One ``dataChanged`` per parent and contiguous run of rows (a batch of results is a few
        signals, not one per image: the sort/filter proxy re-checks every range it is told of).
        """
        seen: set[int] = set()
        by_parent: dict[int, tuple[_Node, set[int]]] = {}
        for key in keys:
            node = self._by_key.get(key)
            while node is not None and node.kind != "root" and id(node) not in seen:
                seen.add(id(node))
                parent = node.parent
                assert parent is not None
                by_parent.setdefault(id(parent), (parent, set()))[1].add(node.row)
                node = parent
        for parent, rows in by_parent.values():
            ordered = sorted(rows)
            start = prev = ordered[0]
            for row in ordered[1:] + [None]:
                if row is not None and row == prev + 1:
                    prev = row
                    continue
                left = self.createIndex(start, DYNAMIC_COLUMNS[0], parent.children[start])
                right = self.createIndex(prev, DYNAMIC_COLUMNS[-1], parent.children[prev])
                self.dataChanged.emit(left, right)
                if row is not None:
                    start = prev = row

    # -- lookup ------------------------------------------------------------------------------
    def index_for_key(self, key: str, column: int = 0) -> QModelIndex:
        node = self._by_key.get(key)
        return self.createIndex(node.row, column, node) if node is not None else QModelIndex()

    def node(self, index: QModelIndex) -> _Node:
        return index.internalPointer() if index.isValid() else self._root

    def keys_under(self, index: QModelIndex) -> list[str]:
        return self.node(index).image_keys()

    def all_keys(self) -> list[str]:
        return list(self._by_key)

    # -- QAbstractItemModel ------------------------------------------------------------------
    def index(self, row: int, column: int, parent: QModelIndex | QPersistentModelIndex = _ROOT) -> QModelIndex:
        node = self.node(parent)
        if 0 <= row < len(node.children) and 0 <= column < len(COLUMNS):
            return self.createIndex(row, column, node.children[row])
        return QModelIndex()

    def parent(self, index: QModelIndex | QPersistentModelIndex = _ROOT) -> QModelIndex:  # type: ignore[override]
        if not index.isValid():
            return QModelIndex()
        node: _Node = index.internalPointer()
        parent = node.parent
        if parent is None or parent.kind == "root":
            return QModelIndex()
        return self.createIndex(parent.row, 0, parent)

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = _ROOT) -> int:  # noqa: N802
        if parent.isValid() and parent.column() != 0:
            return 0
        return len(self.node(parent).children)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = _ROOT) -> int:  # noqa: N802
        return len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:  # noqa: N802
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def flags(self, index: QModelIndex | QPersistentModelIndex) -> Qt.ItemFlag:
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable if index.isValid() else Qt.ItemFlag.NoItemFlags

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        node: _Node = index.internalPointer()
        col = index.column()
        if role == KEY_ROLE:
            return node.key
        if role == KIND_ROLE:
            return node.kind
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            return self._text(node, col, tooltip=role == Qt.ItemDataRole.ToolTipRole)
        if role == SORT_ROLE:
            return self._sort_value(node, col)
        if role == FILTER_ROLE:
            parts = []
            n: _Node | None = node
            while n is not None and n.kind != "root":
                parts.extend(n.texts)
                n = n.parent
            if node.kind == "image" and node.key in self.session.entries:
                parts.append(self.session.entries[node.key].status_text())
            return " ".join(parts)
        if role == Qt.ItemDataRole.ForegroundRole and node.kind == "image" and node.key:
            entry = self.session.entries.get(node.key)
            if entry is not None:
                if col == COL_SCORE and entry.result is not None and entry.result.demo:
                    return QBrush(QColor(200, 30, 30))
                if col == COL_STATUS and entry.status in (Status.UNSUPPORTED, Status.FAILED, Status.NEEDS_REVIEW):
                    return QBrush(QColor(150, 90, 0))
        if role == Qt.ItemDataRole.FontRole and node.kind in ("patient", "study") and col == COL_NAME:
            font = QFont()
            font.setBold(node.kind == "patient")
            return font
        return None

    def _text(self, node: _Node, col: int, tooltip: bool = False) -> str:
        if col == COL_NAME:
            return node.texts[0]
        if col not in DYNAMIC_COLUMNS:
            return node.texts[col - len(DYNAMIC_COLUMNS)]
        if node.kind == "image":
            entry = self.session.entries.get(node.key or "")
            if entry is None:
                return ""
            if col == COL_STATUS:
                return (
                    entry.status_text()
                    if not tooltip or entry.suitability is None
                    else (f"{entry.status_text()}\n{entry.suitability.reason}")
                )
            if col == COL_SCORE:
                return score_text(entry, self.threshold)
            if col == COL_DECISION and entry.decision is not None:
                d = entry.decision
                text = f"{d.decision} ({d.reviewer})" if d.reviewer else d.decision
                return f"{text}: {d.comment}" if tooltip and d.comment else text
            return ""
        # Aggregates for patient / study / series rows.
        entries = [self.session.entries[k] for k in node.image_keys() if k in self.session.entries]
        if col == COL_STATUS:
            analysed = sum(e.has_current_result for e in entries)
            reviewed = sum(e.decision is not None for e in entries)
            stale = sum(e.status is Status.NEEDS_REVIEW for e in entries)
            text = f"{analysed}/{len(entries)} analysed, {reviewed} reviewed"
            return f"{text}, {stale} need re-review" if stale else text
        if col == COL_SCORE:
            scored = [e.result for e in entries if e.has_current_result and e.diagnosable]
            if not scored:
                return ""
            top = max(scored, key=lambda r: r.probability)
            text = f"max {top.probability:.2f}"
            return f"{text} [{DEMO_MARK}]" if any(r.demo for r in scored) else text
        return ""

    def _sort_value(self, node: _Node, col: int) -> Any:
        if col == COL_SCORE:
            entries = [self.session.entries[k] for k in node.image_keys() if k in self.session.entries]
            probs = [e.result.probability for e in entries if e.has_current_result and e.diagnosable]
            return max(probs) if probs else -1.0
        return self._text(node, col).lower()


class StudyFilterProxy(QSortFilterProxyModel):
    """Sorts by :data:`SORT_ROLE`; shows the images matching the text and the status filter (and their parents)."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.setSortRole(SORT_ROLE)
        self.setRecursiveFilteringEnabled(True)
        self.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.setFilterRole(FILTER_ROLE)
        self.setDynamicSortFilter(True)
        self._text = ""
        self._status: Status | None = None

    def set_text(self, text: str) -> None:
        refilter(self, lambda: setattr(self, "_text", text.strip().lower()))

    def set_status(self, status: Status | str | None) -> None:
        # combo box data comes back as str
        refilter(self, lambda: setattr(self, "_status", Status(status) if status else None))

    def filterAcceptsRow(self, source_row: int, source_parent: QModelIndex | QPersistentModelIndex) -> bool:  # noqa: N802
        model = self.sourceModel()
        index = model.index(source_row, 0, source_parent)
        if index.data(KIND_ROLE) != "image":
            return False  # parents are shown when one of their images is (recursive filtering)
        if self._status is not None:
            entry = model.session.entries.get(index.data(KEY_ROLE))
            if entry is None or entry.status is not self._status:
                return False
        if self._text:
            return all(word in str(index.data(FILTER_ROLE)).lower() for word in self._text.split())
        return True
