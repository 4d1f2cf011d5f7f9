"""Retraining wizard (QWizard): data -> validation summary -> preset and device -> training -> results.

All the work happens in a child process, ``python -m training ... --json-progress`` (the same
code path as ``pneumoview train``), driven by :class:`TrainingProcess` (a thin ``QProcess``
wrapper): a crash or an out-of-memory there cannot take the review window down, cancelling is
SIGTERM (the child keeps its last epoch checkpoint), and GPU memory is handed back when it ends.
The protocol itself (command line, typed JSON-lines messages, exit codes) is Qt-free and shared
with the child: :mod:`pneumoview.service.training`.

Demo base weights are never offered as the base of a full-size run, and a run whose memory
estimate exceeds the chosen device's memory asks before it starts.

This module never imports ``training`` or torch (``pneumoview`` must not depend on ``training``,
and the GUI process stays light); it reads the new bundle's ``model_card.json`` as plain JSON.

Opened by the main window as ``RetrainWizard(parent, settings=..., registry=...)``; every
keyword is optional (settings are loaded, the default registry is used).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
    QWizard,
    QWizardPage,
)

from pneumoview.errors import PneumoViewError
from pneumoview.service.training import (
    EXIT_CANCELLED,
    JsonLineBuffer,
    child_command,
    is_demo_weights,
    memory_warning,
)

if TYPE_CHECKING:
    from pneumoview.registry import BundleEntry, ModelRegistry
    from pneumoview.settings import Settings

METRICS = (
    ("sensitivity", "Sensitivity"),
    ("specificity", "Specificity"),
    ("accuracy", "Accuracy"),
    ("auc", "ROC AUC"),
    ("avg", "AVG"),
)
PRESETS = {
    "quick": {"epochs": 3, "folds": 5, "run_folds": 1, "final": False},
    "paper": {"epochs": 100, "folds": 5, "run_folds": None, "final": True},
}


__all__ = ["JsonLineBuffer", "RetrainWizard", "TrainingProcess"]  # JsonLineBuffer: from pneumoview.service.training


class TrainingProcess(QObject):
    """``python -m training ARGS --json-progress`` as a QProcess; emits each JSON event."""

    event = Signal(dict)
    finished = Signal(int, str)  # exit code (130 = cancelled, 2 = error), stderr tail

    def __init__(self, parent: QObject | None = None, *, python: str | None = None) -> None:
        super().__init__(parent)
        self.python = python or sys.executable
        self.process = QProcess(self)
        self.process.setProcessEnvironment(QProcessEnvironment.systemEnvironment())
        self.process.readyReadStandardOutput.connect(self._read_stdout)
        self.process.readyReadStandardError.connect(self._read_stderr)
        self.process.finished.connect(self._finished)
        self._buffer = JsonLineBuffer()
        self._stderr = b""
        self.events: list[dict[str, Any]] = []
        self.cancel_requested = False

    def command(self, args: Sequence[str]) -> tuple[str, list[str]]:
        """Program and arguments (:func:`pneumoview.service.training.child_command`)."""
        return child_command(args, python=self.python)

    def start(self, args: Sequence[str]) -> None:
        self._buffer = JsonLineBuffer()
        self._stderr = b""
        self.events = []
        self.cancel_requested = False
        self.process.start(*self.command(args))

    def running(self) -> bool:
        return self.process.state() != QProcess.ProcessState.NotRunning

    def cancel(self) -> None:
        """SIGTERM: the child stops after the current batch and keeps its last checkpoint."""
        if self.running():
            self.cancel_requested = True
            self.process.terminate()

    def kill_and_wait(self, msecs: int = 15000) -> None:
        if self.running():
            self.cancel()
            if not self.process.waitForFinished(msecs):
                self.process.kill()
                self.process.waitForFinished(3000)

    def _read_stdout(self) -> None:
        for event in self._buffer.feed(bytes(self.process.readAllStandardOutput())):
            self.events.append(event)
            self.event.emit(event)

    def _read_stderr(self) -> None:
        self._stderr = (self._stderr + bytes(self.process.readAllStandardError()))[-20000:]

    def _finished(self, code: int, status: QProcess.ExitStatus) -> None:
        self._read_stdout()
        self._read_stderr()
        if status == QProcess.ExitStatus.CrashExit and code == 0:
            code = -1
        tail = "\n".join(self._stderr.decode("utf-8", "replace").strip().splitlines()[-8:])
        self.finished.emit(int(code), tail)


def _pct(value: Any) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * float(value):.1f}"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# ---------------------------------------------------------------------------------------------
# Pages


class DataPage(QWizardPage):
    def __init__(self, wizard: RetrainWizard) -> None:
        super().__init__()
        self.w = wizard
        self.setTitle("Training data")
        self.setSubTitle(
            "A folder with one sub-folder per class (normal/, pneumoconiosis/) or a CSV "
            "with columns path,label,patient_id. DICOM, PNG and JPEG are read."
        )
        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("folder or CSV file")
        folder_btn = QPushButton("Folder...")
        csv_btn = QPushButton("CSV...")
        folder_btn.clicked.connect(self._choose_folder)
        csv_btn.clicked.connect(self._choose_csv)
        row = QHBoxLayout()
        row.addWidget(self.path_edit, 1)
        row.addWidget(folder_btn)
        row.addWidget(csv_btn)
        clip, llama = wizard.base_paths()
        real_ok = wizard.real_base_available()
        why = ""
        if not real_ok and clip and llama:
            why = " - these are the demo model's weights, not CLIP ViT-L/14 and LLaMA-7B"
        self.base_real = QRadioButton(
            f"Base weights from the settings (CLIP: {clip or 'not set'}; LLaMA: {llama or 'not set'}){why}"
        )
        self.base_demo = QRadioButton(
            "Demo: tiny architecture with demo weights (to try the wizard; NOT a diagnostic model)"
        )
        group = QButtonGroup(self)
        group.addButton(self.base_real)
        group.addButton(self.base_demo)
        (self.base_real if real_ok else self.base_demo).setChecked(True)
        self.base_real.setEnabled(real_ok)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        if wizard.base_args is None:
            layout.addWidget(self.base_real)
            layout.addWidget(self.base_demo)
        else:
            layout.addWidget(QLabel("Base weights: " + " ".join(wizard.base_args)))
        layout.addStretch(1)
        self.path_edit.textChanged.connect(self.completeChanged)

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Training data folder")
        if folder:
            self.path_edit.setText(folder)

    def _choose_csv(self) -> None:
        file, _ = QFileDialog.getOpenFileName(self, "Training data CSV", "", "CSV (*.csv *.tsv *.txt)")
        if file:
            self.path_edit.setText(file)

    def isComplete(self) -> bool:
        text = self.path_edit.text().strip()
        return bool(text) and Path(text).exists()


class SummaryPage(QWizardPage):
    """Runs ``--validate-only`` in the child: counts, problems, refusals, estimate."""

    def __init__(self, wizard: RetrainWizard) -> None:
        super().__init__()
        self.w = wizard
        self.setTitle("Data check")
        self.setSubTitle("Every image is read through the same preprocessing as analysis (lung crop), and cached.")
        self.progress = QProgressBar()
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.progress)
        layout.addWidget(self.text, 1)
        self.summary: dict[str, Any] | None = None
        self.estimate: dict[str, Any] | None = None
        self.estimates: dict[str, dict[str, Any]] = {}  # per device
        self.machine_memory_gb: dict[str, float] = {}  # per device
        self.devices: list[str] = ["cpu"]
        self.proc = TrainingProcess(self, python=wizard.python)
        self.proc.event.connect(self._on_event)
        self.proc.finished.connect(self._on_finished)
        self._done = False

    def initializePage(self) -> None:
        self.summary, self.estimate, self._done = None, None, False
        self.text.setPlainText("Checking the data...")
        self.progress.setRange(0, 0)
        self.proc.start(
            [self.w.data_path(), *self.w.base_arguments(), "--validate-only", "--folds", "2", *self.w.extra_args]
        )
        self.completeChanged.emit()

    def cleanupPage(self) -> None:
        self.proc.kill_and_wait()

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "validate":
            self.progress.setRange(0, int(event["total"]))
            self.progress.setValue(int(event["done"]))
        elif kind == "data_summary":
            self.summary = event["summary"]
            self.text.setPlainText(event["text"])
        elif kind == "estimate":
            self.estimate = event["estimate"]
            self.estimates = dict(event.get("estimates") or {})
            self.machine_memory_gb = dict(event.get("machine_memory_gb") or {})
            self.devices = list(event.get("devices") or ["cpu"])
        elif kind == "error":
            self.text.appendPlainText(f"\nError: {event.get('message')}")

    def _on_finished(self, code: int, stderr: str) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self._done = True
        if self.summary is None:
            self.text.setPlainText(f"The data could not be checked (exit code {code}).\n{stderr}")
        elif not self.summary.get("ok"):
            self.text.appendPlainText("\nTraining is not possible with these data (see REFUSED above).")
        self.completeChanged.emit()

    def min_patients_per_class(self) -> int:
        if not self.summary:
            return 0
        return int(min(self.summary.get("patients_per_class") or [0]))

    def isComplete(self) -> bool:
        return self._done and bool(self.summary and self.summary.get("ok"))


class PresetPage(QWizardPage):
    def __init__(self, wizard: RetrainWizard) -> None:
        super().__init__()
        self.w = wizard
        self.setTitle("Recipe and device")
        self.quick = QRadioButton("Quick check: 3 epochs on one fold of the split (minutes; shows whether it learns)")
        self.paper = QRadioButton("Paper recipe: 100 epochs, 5-fold cross-validation, then a final model on all data")
        group = QButtonGroup(self)
        group.addButton(self.quick)
        group.addButton(self.paper)
        self.quick.setChecked(True)
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 1000)
        self.folds = QSpinBox()
        self.folds.setRange(2, 20)
        self.device = QComboBox()
        self.checkpointing = QCheckBox("Gradient checkpointing (less GPU memory, ~30 % slower)")
        self.estimate = QLabel()
        self.estimate.setWordWrap(True)
        self.memory_warning = QLabel()
        self.memory_warning.setWordWrap(True)
        self.memory_warning.setStyleSheet("color: #b00020;")
        form = QFormLayout()
        form.addRow("Epochs", self.epochs)
        form.addRow("Folds", self.folds)
        form.addRow("Device", self.device)
        layout = QVBoxLayout(self)
        layout.addWidget(self.quick)
        layout.addWidget(self.paper)
        layout.addLayout(form)
        layout.addWidget(self.checkpointing)
        layout.addWidget(self.estimate)
        layout.addWidget(self.memory_warning)
        layout.addStretch(1)
        self.quick.toggled.connect(self._apply_preset)
        for signal in (self.epochs.valueChanged, self.folds.valueChanged, self.device.currentIndexChanged):
            signal.connect(self._update_estimate)

    def initializePage(self) -> None:
        summary_page = self.w.summary_page
        self.device.clear()
        for dev in summary_page.devices:
            self.device.addItem({"cpu": "CPU", "cuda": "GPU (CUDA)"}.get(dev, dev), dev)
        self.device.setCurrentIndex(self.device.count() - 1)
        self.folds.setMaximum(max(2, min(20, summary_page.min_patients_per_class())))
        self._apply_preset()

    def preset(self) -> str:
        return "quick" if self.quick.isChecked() else "paper"

    def _apply_preset(self) -> None:
        p = PRESETS[self.preset()]
        self.epochs.setValue(p["epochs"])
        self.folds.setValue(min(p["folds"], self.folds.maximum()))
        self._update_estimate()

    def run_folds(self) -> int:
        return 1 if self.preset() == "quick" else self.folds.value()

    def final_model(self) -> bool:
        return self.preset() == "paper"

    def chosen_estimate(self) -> dict[str, Any] | None:
        """The child's estimate for the chosen device (the auto device's when it sent only one)."""
        page = self.w.summary_page
        return page.estimates.get(str(self.device.currentData())) or page.estimate

    def memory_warning_text(self) -> str | None:
        est = self.chosen_estimate()
        device = str(self.device.currentData() or "cpu")
        return memory_warning(
            est.get("memory_gb") if est else None, self.w.summary_page.machine_memory_gb.get(device), device=device
        )

    def validatePage(self) -> bool:
        warning = self.memory_warning_text()
        if warning is None:
            return True
        answer = QMessageBox.question(
            self,
            "Not enough memory",
            warning + "\n\nStart the training anyway?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def _update_estimate(self) -> None:
        est = self.chosen_estimate()
        self.memory_warning.setText(self.memory_warning_text() or "")
        if not est:
            self.estimate.setText("")
            return
        n_epochs = self.epochs.value() * (self.run_folds() + (1 if self.final_model() else 0))
        seconds = est["seconds_per_epoch"] * n_epochs * 1.25  # + validation
        self.estimate.setText(
            f"Estimate: about {_duration(seconds)} and {est['memory_gb']:.1f} GB of memory "
            f"({est['trainable_parameters']:,} trainable parameters). {est['notes']}."
        )

    def arguments(self) -> list[str]:
        args = [
            "--preset",
            self.preset(),
            "--epochs",
            str(self.epochs.value()),
            "--folds",
            str(self.folds.value()),
            "--device",
            str(self.device.currentData() or "auto"),
        ]
        if self.preset() == "quick":
            args += ["--run-folds", "1", "--no-final"]
        if self.checkpointing.isChecked():
            args.append("--gradient-checkpointing")
        return args


class TrainPage(QWizardPage):
    """Live loss / AUC curves, progress, ETA, cancel."""

    def __init__(self, wizard: RetrainWizard) -> None:
        super().__init__()
        self.w = wizard
        self.setTitle("Training")
        self.setSubTitle("Runs in a separate process; you can keep using PneumoView meanwhile.")
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(6, 2.6), dpi=90)
        self.ax_loss, self.ax_auc = self.figure.subplots(1, 2)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.progress = QProgressBar()
        self.status = QLabel("Starting...")
        self.status.setWordWrap(True)
        self.cancel_button = QPushButton("Cancel training")
        self.cancel_button.clicked.connect(self.cancel)
        layout = QVBoxLayout(self)
        layout.addWidget(self.canvas, 1)
        layout.addWidget(self.progress)
        row = QHBoxLayout()
        row.addWidget(self.status, 1)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        self.proc = TrainingProcess(self, python=wizard.python)
        self.proc.event.connect(self._on_event)
        self.proc.finished.connect(self._on_finished)
        self.curves: dict[int, dict[str, list[float]]] = {}
        self.result: dict[str, Any] | None = None
        self.exit_code: int | None = None
        self.out_dir: Path | None = None
        self._last_draw = 0.0

    def initializePage(self) -> None:
        self.curves, self.result, self.exit_code = {}, None, None
        self.out_dir = self.w.new_bundle_dir()
        self.progress.setRange(0, 0)
        self.cancel_button.setEnabled(True)
        self.status.setText("Loading the model...")
        args = [self.w.data_path(), *self.w.base_arguments(), *self.w.preset_page.arguments(), *self.w.extra_args]
        # Same data and choices -> same work folder: a cancelled or crashed run resumes.
        self.proc.start([*args, "--out", str(self.out_dir), "--work-dir", str(self.w.work_dir_for(args))])
        self._draw(force=True)
        self.completeChanged.emit()

    def cleanupPage(self) -> None:
        self.proc.kill_and_wait()

    def cancel(self) -> None:
        self.status.setText("Cancelling after the current batch (the last epoch's checkpoint is kept)...")
        self.cancel_button.setEnabled(False)
        self.proc.cancel()

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "start":
            self.progress.setRange(0, int(event["total_epochs"]))
            self.progress.setValue(0)
            self.status.setText(f"Training on {event['device']} ({event['n_images']} images)...")
        elif kind == "epoch":
            curve = self.curves.setdefault(int(event["fold"]), {"epoch": [], "loss": [], "auc": []})
            curve["epoch"].append(event["epoch"])
            curve["loss"].append(math.nan if event["train_loss"] is None else event["train_loss"])
            curve["auc"].append(event.get("auc", math.nan))
            self.progress.setRange(0, int(event["total_epochs"]))
            self.progress.setValue(int(event["done_epochs"]))
            fold = "final model" if event["fold"] < 0 else f"fold {event['fold'] + 1}"
            auc = f", validation AUC {_pct(event.get('auc'))}" if "auc" in event else ""
            loss = math.nan if event["train_loss"] is None else event["train_loss"]
            self.status.setText(
                f"{fold}, epoch {event['epoch']}/{event['epochs']}: loss {loss:.4f}{auc}"
                f" - about {_duration(event['eta_s'])} left"
            )
            self._draw()
        elif kind == "done":
            self.result = event
        elif kind == "error":
            self.status.setText(f"Error: {event.get('message')}")

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < 0.3:
            return
        self._last_draw = now
        self.ax_loss.clear()
        self.ax_auc.clear()
        for fold, c in sorted(self.curves.items()):
            label = "final" if fold < 0 else f"fold {fold + 1}"
            self.ax_loss.plot(c["epoch"], c["loss"], label=label)
            if fold >= 0:
                self.ax_auc.plot(c["epoch"], c["auc"], label=label)
        self.ax_loss.set_title("training loss", fontsize=9)
        self.ax_auc.set_title("validation AUC", fontsize=9)
        self.ax_auc.set_ylim(0, 1)
        if self.curves:
            self.ax_loss.legend(fontsize=7)
        self.figure.tight_layout()
        self.canvas.draw_idle()

    def _on_finished(self, code: int, stderr: str) -> None:
        self.exit_code = code
        self.cancel_button.setEnabled(False)
        self._draw(force=True)
        self.progress.setRange(0, 1)
        if code == 0 and self.result is not None:
            self.progress.setValue(1)
            self.status.setText("Finished. " + self.result.get("text", "").splitlines()[0])
        elif code == EXIT_CANCELLED or self.proc.cancel_requested:
            self.progress.setValue(0)
            self.status.setText(
                "Cancelled. The checkpoint of the last finished epoch is kept; "
                "run the wizard again with the same settings to continue."
            )
        else:
            self.progress.setValue(0)
            self.status.setText(f"Training failed (exit code {code}).\n{stderr}")
        self.completeChanged.emit()

    def isComplete(self) -> bool:
        return self.exit_code == 0 and self.result is not None


class ResultsPage(QWizardPage):
    """The new model vs the active one (on the same folds when the base weights match)."""

    def __init__(self, wizard: RetrainWizard) -> None:
        super().__init__()
        self.w = wizard
        self.setTitle("Results")
        self.table = QTableWidget(len(METRICS), 2)
        self.table.setVerticalHeaderLabels([label for _, label in METRICS])
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.activate = QRadioButton("Activate the new model")
        self.keep = QRadioButton("Keep the current model (the new one stays in the model list)")
        group = QButtonGroup(self)
        group.addButton(self.activate)
        group.addButton(self.keep)
        self.keep.setChecked(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(self.note)
        layout.addWidget(self.activate)
        layout.addWidget(self.keep)
        self.setFinalPage(True)

    def initializePage(self) -> None:
        result = self.w.train_page.result or {}
        new = result.get("summary") or {}
        comparison = result.get("comparison")
        compared = result.get("compared_with")
        active = self.w.active_entry()
        if comparison:
            old = comparison["summary"]
            old_header = "Active model, same folds"
            note = (
                f"Both models evaluated on the same validation folds (mean +/- sd, %). The active model "
                f"({compared.get('model_id') if compared else '?'}) may have seen some of these images in its own training."
            )
        elif active is not None:
            metrics = active.metrics
            old = {k: {"mean": metrics.get(k), "sd": metrics.get(f"{k}_sd")} for k, _ in METRICS}
            old_header = "Active model, its own report"
            note = (
                "The active model was trained on other base weights or another architecture, so it could not be "
                "evaluated on the same folds; its own recorded figures are shown."
            )
        else:
            old, old_header = {}, "Active model"
            note = "There is no active model yet."
        self.table.setHorizontalHeaderLabels(["New model", old_header])
        for row, (key, _) in enumerate(METRICS):
            for col, source in enumerate((new, old)):
                cell = source.get(key) or {}
                sd = cell.get("sd")
                text = f"{_pct(cell.get('mean'))} +/- {_pct(sd)}" if sd is not None else _pct(cell.get("mean"))
                self.table.setItem(row, col, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()
        self.note.setText(note + f"\nNew bundle: {result.get('bundle', '')}")
        self.activate.setEnabled(bool(result.get("registry_id")))

    def validatePage(self) -> bool:
        result = self.w.train_page.result or {}
        if self.activate.isChecked() and result.get("registry_id"):
            self.w.registry.activate(result["registry_id"])
            self.w.activated_id = result["registry_id"]
            self.w.modelActivated.emit(result["registry_id"])
        return True


class RetrainWizard(QWizard):
    """The retraining wizard. Keywords (all optional):

    ``settings`` (pneumoview.settings.Settings: base weight paths), ``registry`` (ModelRegistry),
    ``python`` (interpreter for the child; default ``sys.executable``), ``base_args`` (explicit
    base-weight options for the child instead of settings/demo, e.g. ``["--random-base", "0"]``),
    ``extra_args`` (appended to every child command), ``runs_dir`` (where new bundles are written
    before registration; default ``<user data>/training-runs``).
    """

    modelActivated = Signal(str)  # registry id of a newly activated model

    def __init__(
        self,
        parent: QWidget | None = None,
        *,
        settings: Settings | None = None,
        registry: ModelRegistry | None = None,
        python: str | None = None,
        base_args: Sequence[str] | None = None,
        extra_args: Sequence[str] = (),
        runs_dir: str | Path | None = None,
        **_: Any,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Retrain PneumoLLM on my data")
        self.setWizardStyle(QWizard.WizardStyle.ClassicStyle)
        if settings is None:
            from pneumoview.settings import load_settings

            try:
                settings = load_settings(strict=False)
            except (PneumoViewError, OSError):  # unreadable settings only mean "no base weights set"
                settings = None
        self.settings = settings
        if registry is None:
            from pneumoview.registry import ModelRegistry

            registry = ModelRegistry()
        self.registry = registry
        self.python = python
        self.base_args = list(base_args) if base_args is not None else None
        self.extra_args = list(extra_args)
        if runs_dir is None:
            from pneumoview.paths import data_dir

            runs_dir = data_dir() / "training-runs"
        self.runs_dir = Path(runs_dir)
        self.activated_id: str | None = None
        self.data_page = DataPage(self)
        self.summary_page = SummaryPage(self)
        self.preset_page = PresetPage(self)
        self.train_page = TrainPage(self)
        self.results_page = ResultsPage(self)
        for page in (self.data_page, self.summary_page, self.preset_page, self.train_page, self.results_page):
            self.addPage(page)
        self.resize(760, 560)

    # --- what the pages share -----------------------------------------------------------------
    def base_paths(self) -> tuple[str | None, str | None]:
        return getattr(self.settings, "clip_path", None), getattr(self.settings, "llama_path", None)

    def real_base_available(self) -> bool:
        """Both base paths are set and neither is the demo model's (a full-size run on demo weights cannot work)."""
        clip, llama = self.base_paths()
        return bool(clip and llama) and not (is_demo_weights(clip) or is_demo_weights(llama))

    def data_path(self) -> str:
        return self.data_page.path_edit.text().strip()

    def base_arguments(self) -> list[str]:
        if self.base_args is not None:
            return list(self.base_args)
        if self.data_page.base_demo.isChecked():
            return ["--demo"]
        if not self.real_base_available():  # never demo weights under a full-size architecture
            return ["--demo"]
        clip, llama = self.base_paths()
        return ["--base-clip", str(clip), "--base-llama", str(llama)]

    def new_bundle_dir(self) -> Path:
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = self.runs_dir / f"bundle-{stamp}"
        n = 1
        while path.exists() or path.with_name(path.name + ".run").exists():
            n += 1
            path = self.runs_dir / f"bundle-{stamp}-{n}"
        return path

    def work_dir_for(self, args: Sequence[str]) -> Path:
        """Checkpoint folder of a run, keyed by its arguments (so the same run resumes)."""
        import hashlib

        key = hashlib.sha256(json.dumps([str(a) for a in args]).encode()).hexdigest()[:16]
        return self.runs_dir / f"work-{key}"

    def active_entry(self) -> BundleEntry | None:
        try:
            return self.registry.active()
        except (PneumoViewError, OSError):  # a broken registry must not break the results page
            return None

    def done(self, result: int) -> None:
        self.summary_page.proc.kill_and_wait()
        self.train_page.proc.kill_and_wait()
        super().done(result)
