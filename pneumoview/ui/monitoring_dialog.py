"""Monitoring dialog: weekly flagged fraction with its band, reader-vs-AI agreement, the warning."""

from __future__ import annotations

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QVBoxLayout, QWidget

from pneumoview.monitoring import MonitoringReport, draw


class MonitoringDialog(QDialog):
    """Shows a :class:`~pneumoview.monitoring.MonitoringReport` (plot + one line of warning)."""

    def __init__(self, report: MonitoringReport, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Monitoring: flagged fraction and agreement per week")
        self.report = report
        layout = QVBoxLayout(self)
        self.warning_label = QLabel()
        self.warning_label.setWordWrap(True)
        if not report.weeks:
            self.warning_label.setText("No analysed images (demo results are not counted) yet.")
        elif report.warnings:
            self.warning_label.setText(f"<b>Warning:</b> {report.message()}")
            self.warning_label.setStyleSheet("color: #b00020;")
        else:
            expected = "" if report.expected is None else f" ({report.expected:.0%} +- {report.band:.0%})"
            self.warning_label.setText(f"Every week's flagged fraction is within the expected band{expected}.")
        layout.addWidget(self.warning_label)
        self.figure = Figure(figsize=(7, 5))
        self.canvas = FigureCanvasQTAgg(self.figure)
        if report.weeks:
            draw(self.figure, report)
            self.figure.tight_layout()
        layout.addWidget(self.canvas, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
