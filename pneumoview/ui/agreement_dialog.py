"""The agreement dashboard: reader-vs-reader and reader-vs-AI kappas, confusion tables, a plot.

All numbers come from :mod:`pneumoview.reading.agreement`; this dialog only lays them out. The
plot (matplotlib, Qt canvas) shows each pair's kappa on the major category and, for reader pairs,
the linear and quadratic weighted kappas on the 12-point profusion scale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from pneumoview.reading.agreement import Agreement, all_pairs, format_kappa, reader_vs_ai
from pneumoview.reading.ilo import PROFUSION
from pneumoview.reading.repository import ReadingRepository
from pneumoview.reading.rules import FINAL, AiSuggestion, SubmittedReading
from pneumoview.ui.reading_form import named

SUMMARY_HEADERS = ("rater A", "rater B", "studies", "agreement", "kappa (major)", "kappa linear", "kappa quadratic")


def summary_cells(a: Agreement) -> list[str]:
    observed = "n/a" if a.observed is None else f"{a.observed:.0%}"
    weighted = (
        (format_kappa(a.kappa_linear), format_kappa(a.kappa_quadratic)) if a.profusion_table is not None else ("-", "-")
    )
    return [a.rater_a, a.rater_b, str(a.n), observed, format_kappa(a.kappa_major), *weighted]


class AgreementDialog(QDialog):
    """Pairs on top (select one), its confusion tables below, the kappa plot on the right."""

    def __init__(
        self, readings: Sequence[SubmittedReading], ai: Mapping[str, AiSuggestion], parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Reader agreement")
        self.resize(1100, 700)
        self.pairs: list[Agreement] = all_pairs(readings)
        for reader in sorted({r.reader for r in readings}):
            versus_ai = reader_vs_ai(readings, ai, reader)
            if versus_ai.n:
                self.pairs.append(versus_ai)
        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        layout.addLayout(top, 1)
        left = QVBoxLayout()
        top.addLayout(left, 3)
        self.summary = named(QTableWidget(len(self.pairs), len(SUMMARY_HEADERS)), "agreement_summary")
        self.summary.setHorizontalHeaderLabels(list(SUMMARY_HEADERS))
        self.summary.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.summary.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.summary.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        for row, pair in enumerate(self.pairs):
            for col, text in enumerate(summary_cells(pair)):
                self.summary.setItem(row, col, QTableWidgetItem(text))
        self.summary.resizeColumnsToContents()
        left.addWidget(QLabel("<b>Pairs</b> (kappa n/a: every rating in one category)"))
        left.addWidget(self.summary)
        self.major_title = QLabel()
        left.addWidget(self.major_title)
        self.major = named(QTableWidget(), "major_table")
        self.major.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        left.addWidget(self.major)
        self.figure = Figure(figsize=(4.5, 4), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        top.addWidget(self.canvas, 2)
        layout.addWidget(QLabel("<b>Profusion</b> (12-point scale, rows rater A, columns rater B)"))
        self.profusion = named(QTableWidget(len(PROFUSION), len(PROFUSION)), "profusion_table")
        self.profusion.setHorizontalHeaderLabels(list(PROFUSION))
        self.profusion.setVerticalHeaderLabels(list(PROFUSION))
        self.profusion.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.profusion.horizontalHeader().setDefaultSectionSize(44)
        for table in (self.summary, self.major, self.profusion):
            table.verticalHeader().setDefaultSectionSize(22)
        layout.addWidget(self.profusion, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.summary.itemSelectionChanged.connect(self._show_selected)
        self._plot()
        if self.pairs:
            self.summary.selectRow(0)
        else:
            self.major_title.setText("No two readers (or a reader and the AI) have classified the same study yet.")

    @classmethod
    def from_repository(
        cls, repo: ReadingRepository, parent: QWidget | None = None, *, reader: str | None = None
    ) -> AgreementDialog:
        """Blinding holds here too: only studies that are final, or that ``reader`` has read."""
        readings = [
            r
            for study, rs in repo.by_study().items()
            if repo.final(study).status == FINAL or (reader and any(x.reader == reader for x in rs))
            for r in rs
        ]
        ai = {}
        for study in {r.study_uid for r in readings}:
            suggestion = repo.ai_suggestion(study)
            if suggestion is not None:
                ai[study] = suggestion
        return cls(readings, ai, parent)

    def _show_selected(self) -> None:
        rows = self.summary.selectionModel().selectedRows()
        if not rows:
            return
        self.show_pair(self.pairs[rows[0].row()])

    def show_pair(self, pair: Agreement) -> None:
        self.major_title.setText(f"Major category: rows {pair.rater_a}, columns {pair.rater_b}")
        categories = list(pair.major_categories)
        self.major.setRowCount(len(categories))
        self.major.setColumnCount(len(categories))
        self.major.setHorizontalHeaderLabels(categories)
        self.major.setVerticalHeaderLabels(categories)
        _fill(self.major, pair.major_table.tolist())
        table = pair.profusion_table.tolist() if pair.profusion_table is not None else None
        _fill(self.profusion, table or [[0] * len(PROFUSION) for _ in PROFUSION], blank=table is None)

    def _plot(self) -> None:
        self.figure.clear()
        axes = self.figure.add_subplot(1, 1, 1)
        names = [f"{p.rater_a} vs {p.rater_b}" for p in self.pairs]
        series = (
            ("major", [p.kappa_major for p in self.pairs]),
            ("linear (profusion)", [p.kappa_linear for p in self.pairs]),
            ("quadratic (profusion)", [p.kappa_quadratic for p in self.pairs]),
        )
        height = 0.25
        for i, (label, values) in enumerate(series):
            ys = [row + (i - 1) * height for row in range(len(names))]
            axes.barh(ys, [v if v is not None else 0.0 for v in values], height=height, label=f"kappa {label}")
        for row, pair in enumerate(self.pairs):
            if pair.kappa_major is None:
                axes.text(0.02, row, "n/a", va="center", fontsize="small")
        axes.set_yticks(range(len(names)), names)
        axes.invert_yaxis()
        axes.set_xlim(-0.2, 1.0)
        axes.axvline(0.0, color="black", linewidth=0.6)
        axes.set_xlabel("kappa")
        axes.set_title("Agreement")
        if names:
            self.figure.legend(loc="outside lower center", fontsize="small")
        self.canvas.draw_idle()


def _fill(widget: QTableWidget, table: list[list[int]], *, blank: bool = False) -> None:
    for i, row in enumerate(table):
        for j, count in enumerate(row):
            item = QTableWidgetItem("" if blank or count == 0 else str(count))
            item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
            if i == j and not blank:
                item.setBackground(Qt.GlobalColor.lightGray)
            widget.setItem(i, j, item)
