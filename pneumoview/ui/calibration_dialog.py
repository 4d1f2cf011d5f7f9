"""Operating-point dialogs: the calibration table + ROC plot, and the "no operating point" question.

:class:`CalibrationDialog` shows what :mod:`pneumoview.calibration` computes from the scores of a
labelled local set (the JSON that ``pneumoview calibrate`` writes), or from the final readings in the
results database with the stored results of the bundle in use
(:func:`pneumoview.reading.store_calibration.pairs_from_store`): a row per candidate threshold
with sensitivity / specificity and their Wilson intervals, the ROC curve with the AUC's bootstrap
interval, and the chosen point's referrals per 100 workers, PPV and NPV at the stated prevalence.
The threshold is saved as an operating point of the bundle the scores came from, and only when
that is the bundle in use (same weights fingerprint).

:func:`operating_point_box` asks, when a bundle has no operating point yet, whether to calibrate
or to confirm the default threshold: switching model never silently reuses another bundle's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from PySide6.QtCore import QProcess, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from pneumoview.calibration import Calibration, calibrate
from pneumoview.errors import PneumoViewError
from pneumoview.operating_points import OperatingPoint, OperatingPointStore

if TYPE_CHECKING:
    import tempfile

    from numpy.typing import ArrayLike

    from pneumoview.service.analysis import EngineSpec

COLUMNS = ("Threshold", "Sensitivity (95% CI)", "Specificity (95% CI)", "TP", "FP", "TN", "FN")


def _ci(value: float, ci: tuple[float, float]) -> str:
    return f"{value:.3f} ({ci[0]:.3f}-{ci[1]:.3f})"


class CalibrationDialog(QDialog):
    """Choose a threshold on scored labelled data and save it for the bundle in use.

    ``calibrate_command(data, out_json)`` (from the window: the model in use) gives the
    ``pneumoview calibrate`` command line that scores a labelled folder in a child process.
    The source combo box chooses between that labelled folder and the final readings of the
    results database ``database`` (no scoring: the stored results of the bundle in use).
    """

    SOURCES = (("labelled folder", "folder"), ("final readings in the store", "store"))

    scoringFinished = Signal(bool, str)  # ok, message

    def __init__(
        self,
        parent: QWidget | None = None,
        *,
        bundle_fingerprint: str = "",
        bundle_id: str = "",
        who: str = "",
        points: OperatingPointStore | None = None,
        on_saved: Callable[[OperatingPoint], None] | None = None,
        calibrate_command: Callable[[Path, Path], list[str]] | None = None,
        database: Path | None = None,
        model_demo: bool = False,
    ) -> None:
        super().__init__(parent)
        self.calibrate_command = calibrate_command
        self.database, self.model_demo = database, model_demo
        self.process: QProcess | None = None
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        self.setWindowTitle("Calibrate the operating point")
        self.bundle_fingerprint, self.bundle_id, self.who = bundle_fingerprint, bundle_id, who
        self.points = points or OperatingPointStore()
        self.on_saved = on_saved
        self.scores: np.ndarray | None = None
        self.positive: np.ndarray | None = None
        self.data_fingerprint = ""
        self.summary: dict[str, Any] = {}
        self.demo = False
        self.calibration: Calibration | None = None
        self.saved_point: OperatingPoint | None = None
        self._build()

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        self.load_button = QPushButton("Load scores (pneumoview calibrate --json)...")
        self.load_button.clicked.connect(self._choose_json)
        self.target_combo = QComboBox()
        self.target_combo.addItems(["sensitivity", "specificity"])
        self.target_spin = QDoubleSpinBox(decimals=3, minimum=0.01, maximum=1.0, singleStep=0.01, value=0.9)
        self.prevalence_spin = QDoubleSpinBox(decimals=3, minimum=0.001, maximum=0.999, singleStep=0.01, value=0.05)
        for widget in (self.target_combo, self.target_spin, self.prevalence_spin):
            signal = widget.currentIndexChanged if isinstance(widget, QComboBox) else widget.valueChanged
            signal.connect(self.recompute)
        top.addWidget(self.load_button)
        self.source_combo = QComboBox()
        for text, key in self.SOURCES:
            self.source_combo.addItem(text, key)
        self.source_combo.currentIndexChanged.connect(self._source_changed)
        top.addWidget(QLabel("Source"))
        top.addWidget(self.source_combo)
        self.score_button = QPushButton("Score a labelled folder...")
        self.score_button.clicked.connect(self._score_source)
        top.addWidget(self.score_button)
        for text, widget in (
            ("Target", self.target_combo),
            ("at least", self.target_spin),
            ("Prevalence", self.prevalence_spin),
        ):
            top.addWidget(QLabel(text))
            top.addWidget(widget)
        layout.addLayout(top)
        self.figures_label = QLabel("Load the scores of a labelled local set to begin.")
        self.figures_label.setWordWrap(True)
        self.figures_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.figures_label)
        splitter = QSplitter()
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.figure = Figure(figsize=(4.5, 4.0))
        self.canvas = FigureCanvasQTAgg(self.figure)
        splitter.addWidget(self.table)
        splitter.addWidget(self.canvas)
        layout.addWidget(splitter, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.save_button = buttons.addButton(
            "Save as this model's operating point", QDialogButtonBox.ButtonRole.ActionRole
        )
        self.save_button.setEnabled(False)
        self.save_button.clicked.connect(self.save)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.resize(1000, 620)
        self._source_changed()

    def source(self) -> str:
        """``folder`` or ``store``: where the next scores come from."""
        return str(self.source_combo.currentData())

    def _source_changed(self) -> None:
        store = self.source() == "store"
        self.score_button.setText("Use the final readings" if store else "Score a labelled folder...")
        self.score_button.setToolTip(
            (
                "One pair per study with a final ILO determination (0 vs 1/2/3) and a stored result of the model in use"
                if self.bundle_fingerprint
                else "The model in use is not known yet: analyse an image with it first"
            )
            if store
            else "A folder with normal/ and pneumoconiosis/ sub-folders (the training data format)"
        )
        self.score_button.setEnabled(
            (self.database is not None and bool(self.bundle_fingerprint))
            if store
            else self.calibrate_command is not None
        )

    def _score_source(self) -> None:
        if self.source() == "store":
            self.load_from_store()
        else:
            self._choose_folder()

    def load_from_store(self) -> bool:
        """The final readings of :attr:`database` paired with the stored results of the bundle in use."""
        from pneumoview.reading.store_calibration import pairs_from_store
        from pneumoview.store import ResultStore

        if self.database is None:
            return False
        try:
            with ResultStore(self.database) as store:
                pairs = pairs_from_store(store, self.bundle_fingerprint)
        except PneumoViewError as exc:
            self.figures_label.setText(f"Cannot calibrate from the store: {exc.message}")
            self.save_button.setEnabled(False)
            self.scoringFinished.emit(False, exc.message)
            return False
        self.set_data(
            pairs.scores,
            pairs.positive,
            summary=pairs.summary,
            data_fingerprint=self.bundle_fingerprint,
            demo=self.model_demo,
        )
        self.scoringFinished.emit(True, "")
        return True

    # -- data ------------------------------------------------------------------------------
    def _choose_json(self) -> None:
        name, _ = QFileDialog.getOpenFileName(self, "Calibration scores", "", "JSON (*.json)")
        if name:
            try:
                self.load_json(Path(name))
            except PneumoViewError as exc:
                QMessageBox.warning(self, "Cannot use this file", exc.message)

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Labelled images (normal/ and pneumoconiosis/)")
        if folder:
            self.run_scoring(Path(folder))

    def run_scoring(self, data: Path) -> None:
        """Score ``data`` with the model in use in a child ``pneumoview calibrate``; the figures
        appear when it ends (``scoringFinished``)."""
        import tempfile

        if self.calibrate_command is None or (
            self.process is not None and self.process.state() != QProcess.ProcessState.NotRunning
        ):
            return
        self._scratch = tempfile.TemporaryDirectory(prefix="pneumoview-calibrate-")
        out = Path(self._scratch.name) / "scores.json"
        command = self.calibrate_command(data, out)
        process = QProcess(self)
        process.setProcessChannelMode(QProcess.ProcessChannelMode.SeparateChannels)
        process.finished.connect(lambda code, _status: self._scored(process, code, out))
        self.process = process
        self.score_button.setEnabled(False)
        self.figures_label.setText(f"Scoring the images of {data.name} with the model in use...")
        process.start(command[0], command[1:])

    def _scored(self, process: QProcess, code: int, out: Path) -> None:
        self.score_button.setEnabled(True)
        errors = bytes(process.readAllStandardError().data()).decode("utf-8", "replace").strip().splitlines()
        message = next((line for line in reversed(errors) if line.startswith("pneumoview calibrate")), "")
        if code == 0 and out.is_file():
            try:
                self.load_json(out)
            except PneumoViewError as exc:
                code, message = 2, exc.message
        if code != 0:
            self.figures_label.setText(f"Scoring failed: {message or f'exit code {code}'}")
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None
        self.scoringFinished.emit(code == 0, message)

    def load_json(self, path: Path) -> None:
        """Scores written by ``pneumoview calibrate --json``; PneumoViewError when unusable."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            scores, positive = data["scores"], data["positive"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PneumoViewError(f"not a calibration file of pneumoview calibrate ({exc})", path=path) from exc
        self.set_data(
            scores,
            positive,
            summary=dict(data.get("data_summary") or {}),
            data_fingerprint=str(data.get("bundle_fingerprint", "")),
            demo=bool(data.get("demo")),
        )

    def set_data(
        self,
        scores: ArrayLike,
        positive: ArrayLike,
        *,
        summary: dict[str, Any] | None = None,
        data_fingerprint: str = "",
        demo: bool = False,
    ) -> None:
        self.scores = np.asarray(scores, dtype=np.float64)
        self.positive = np.asarray(positive, dtype=bool)
        self.summary, self.data_fingerprint, self.demo = dict(summary or {}), data_fingerprint, demo
        self.recompute()

    # -- figures ---------------------------------------------------------------------------
    def recompute(self) -> None:
        if self.scores is None or self.positive is None:
            return
        target = self.target_combo.currentText()
        value = float(self.target_spin.value())
        try:
            self.calibration = calibrate(
                self.scores,
                self.positive,
                prevalence=float(self.prevalence_spin.value()),
                target_sensitivity=value if target == "sensitivity" else None,
                target_specificity=value if target == "specificity" else None,
            )
        except PneumoViewError as exc:
            self.calibration = None
            self.figures_label.setText(f"Cannot calibrate: {exc.message}")
            self.save_button.setEnabled(False)
            return
        self._show(self.calibration)

    def _show(self, r: Calibration) -> None:
        c, p = r.chosen, r.at_prevalence
        ppv = "n/a" if p.ppv is None else f"{p.ppv:.3f}"
        npv = "n/a" if p.npv is None else f"{p.npv:.3f}"
        matches = bool(self.bundle_fingerprint) and self.data_fingerprint == self.bundle_fingerprint
        note = (
            ""
            if matches
            else (
                "<br><b>These scores come from another model than the one in use: "
                "they cannot set its operating point.</b>"
            )
        )
        demo = "<b>DEMO - not a diagnosis:</b> " if self.demo else ""
        if self.summary.get("source") == "store":
            left_out = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in self.summary.get("excluded", {}).items() if v)
            note += (
                "<br>Source: final readings in the store, one pair per study"
                + (f"; left out: {left_out}" if left_out else "")
                + "."
            )
        self.figures_label.setText(
            f"{demo}n = {r.n} ({r.n_positive} pneumoconiosis, {r.n_negative} normal); "
            f"AUC {r.auc:.3f} (95% CI {r.auc_ci[0]:.3f}-{r.auc_ci[1]:.3f}).<br>"
            f"<b>Threshold {c.threshold:.4f}</b>: sensitivity {_ci(c.sensitivity, c.sensitivity_ci)}, "
            f"specificity {_ci(c.specificity, c.specificity_ci)}.<br>"
            f"At prevalence {p.prevalence:.1%}: {p.referrals_per_100:.1f} referrals per 100 workers, "
            f"PPV {ppv}, NPV {npv}"
            + (f", {p.referred_per_case_found:.1f} referred per case found" if p.referred_per_case_found else "")
            + f".{note}"
        )
        self.table.setRowCount(len(r.table))
        chosen_row = 0
        for i, row in enumerate(r.table):
            cells = (
                f"{row.threshold:.4f}",
                _ci(row.sensitivity, row.sensitivity_ci),
                _ci(row.specificity, row.specificity_ci),
                str(row.tp),
                str(row.fp),
                str(row.tn),
                str(row.fn),
            )
            for j, text in enumerate(cells):
                self.table.setItem(i, j, QTableWidgetItem(text))
            if row is c:
                chosen_row = i
        self.table.selectRow(chosen_row)
        self.figure.clear()
        from pneumoview.calibration import draw_roc

        draw_roc(self.figure, r, title="DEMO - not a diagnosis" if self.demo else "")
        self.canvas.draw_idle()
        self.save_button.setEnabled(matches and 0.0 < c.threshold < 1.0)

    def save(self) -> OperatingPoint | None:
        """Save the chosen threshold for the bundle in use (refused for another bundle's scores)."""
        if self.calibration is None or self.data_fingerprint != self.bundle_fingerprint or not self.bundle_fingerprint:
            return None
        try:
            point = self.points.save(
                OperatingPoint.new(
                    bundle_fingerprint=self.bundle_fingerprint,
                    bundle_id=self.bundle_id,
                    threshold=self.calibration.threshold,
                    created_by=self.who,
                    data_summary=self.summary,
                    figures=self.calibration.figures(),
                )
            )
        except PneumoViewError as exc:
            QMessageBox.warning(self, "Operating point not saved", exc.message)
            return None
        self.saved_point = point
        if self.on_saved is not None:
            self.on_saved(point)
        self.save_button.setEnabled(False)
        self.figures_label.setText(self.figures_label.text() + f"<br>Saved as operating point {point.id[:8]}.")
        return point


# --------------------------------------------------------------------------- no operating point yet
CALIBRATE, CONFIRM, CANCEL = "calibrate", "confirm", "cancel"


def operating_point_box(
    parent: QWidget | None, *, bundle_id: str, default: float
) -> tuple[QMessageBox, dict[Any, str]]:
    """The question asked when a bundle has no operating point; the dict maps buttons to choices."""
    box = QMessageBox(
        QMessageBox.Icon.Question,
        "No operating point for this model",
        f"Model {bundle_id or '(unnamed)'} has no operating point on this computer.\n\n"
        "A threshold belongs to one model: WHO's guidance for chest X-ray CAD asks each site "
        "to calibrate it on its own population. Calibrate now (pneumoview calibrate on "
        f"labelled local images), or confirm the default threshold {default:.2f} for this model "
        "(recorded as not calibrated).",
        parent=parent,
    )
    calibrate_button = box.addButton("Calibrate...", QMessageBox.ButtonRole.ActionRole)
    confirm_button = box.addButton(f"Use {default:.2f} for this model", QMessageBox.ButtonRole.AcceptRole)
    cancel_button = box.addButton(QMessageBox.StandardButton.Cancel)
    return box, {calibrate_button: CALIBRATE, confirm_button: CONFIRM, cancel_button: CANCEL}


def ask_operating_point(parent: QWidget | None, *, bundle_id: str, default: float) -> str:
    box, choices = operating_point_box(parent, bundle_id=bundle_id, default=default)
    box.exec()
    return choices.get(box.clickedButton(), CANCEL)


def calibrate_command_for(spec: EngineSpec) -> Callable[[Path, Path], list[str]]:
    """The ``pneumoview calibrate`` command line for the window's engine spec (frozen app or checkout)."""
    import sys

    def command(data: Path, out: Path) -> list[str]:
        base = (
            [sys.executable, "calibrate"]
            if getattr(sys, "frozen", False)
            else [sys.executable, "-m", "pneumoview", "calibrate"]
        )
        args = [str(data), "--target-sensitivity", "0.9", "--json", str(out), "-q"]
        if spec.demo:
            return base + args + ["--demo"]
        args += ["--model", spec.bundle, "--clip", spec.clip_path, "--llama", spec.llama_path, "--device", spec.device]
        if spec.precision in ("int8", "nf4"):
            args += ["--quantisation", spec.precision]
        elif spec.precision in ("auto", "bf16", "fp16", "fp32"):
            args += ["--precision", spec.precision]
        return base + args

    return command


def bundle_identity(bundle_dir: str | Path) -> tuple[str, str]:
    """(weights fingerprint, model id) from a bundle's manifest.json (no torch)."""
    from pneumoview.inference.manifest import read_manifest_data

    manifest = read_manifest_data(Path(bundle_dir))
    return str(manifest.get("weights_sha256", "")), str(manifest.get("model_id", ""))


def threshold_for_bundle(
    parent: QWidget | None,
    bundle_dir: str | Path,
    *,
    default: float,
    who: str,
    points: OperatingPointStore | None = None,
    audit: Callable[[str, dict[str, Any]], None] | None = None,
    ask: Callable[..., str] = ask_operating_point,
    open_calibration: Callable[[str, str], object] | None = None,
) -> float | None:
    """The threshold to analyse with: the bundle's operating point, else the user's answer.

    Returns None when the user chose to calibrate first or cancelled (the analysis does not start).
    """
    points = points or OperatingPointStore()
    fingerprint, model_id = bundle_identity(bundle_dir)
    answer = points.threshold_for(fingerprint)
    if answer.threshold is not None:
        return answer.threshold
    choice = ask(parent, bundle_id=model_id, default=default)
    if choice == CONFIRM:
        point = points.confirm_default(
            bundle_fingerprint=fingerprint, bundle_id=model_id, threshold=default, created_by=who
        )
        if audit is not None:
            audit(
                "operating-point-changed",
                {
                    "operating_point_id": point.id,
                    "bundle_fingerprint": fingerprint,
                    "bundle_id": model_id,
                    "threshold": default,
                    "kind": point.kind,
                },
            )
        return default
    if choice == CALIBRATE and open_calibration is not None:
        open_calibration(fingerprint, model_id)
    return None
