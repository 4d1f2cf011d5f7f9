"""Model setup dialog: paths to the CLIP and LLaMA weights and a bundle, validated with clear messages.

Checks that need no torch run at once: the paths exist and the bundle is valid in full
(:func:`pneumoview.inference.bundle.check_bundle`: tensor names and shapes against the
architecture, all finite, ``weights_sha256`` present and matching, class order, preprocessing
ranges). "Validate" then loads the model in the analysis process
(:mod:`pneumoview.ui.analysis_process`, ``InferenceEngine.load``), whose specific errors are shown
as headings: wrong file or architecture (WeightsError), fingerprint mismatch, not enough memory,
bad bundle. "Import reference checkpoint..." registers the reference implementation's released
checkpoint in a child process (``pneumoview models import-reference``: torch stays out of the GUI
process) and activates it. The demo model is one click away.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from pneumoview.active_model import ActiveModel, resolve_active_model
from pneumoview.errors import (
    BundleError,
    ConfigError,
    FingerprintMismatchError,
    InsufficientMemoryError,
    PneumoViewError,
    WeightsError,
)
from pneumoview.settings import Settings
from pneumoview.ui.analysis_process import AnalysisClient, EngineSpec
from pneumoview.ui.settings_dialog import add_device_rows, path_row
from pneumoview.ui.workers import FunctionJob, ValidateJob

#: The longest an import of the reference checkpoint may take (reading ~a few hundred MB).
IMPORT_TIMEOUT_S = 600

#: Heading shown above an error's own message, most specific class first.
ERROR_HEADINGS: tuple[tuple[type[PneumoViewError], str], ...] = (
    (FingerprintMismatchError, "Fingerprint mismatch: the bundle was trained on other base weights"),
    (InsufficientMemoryError, "Not enough memory for this model"),
    (WeightsError, "Wrong weights file or wrong architecture"),
    (BundleError, "The bundle is not valid"),
    (ConfigError, "Configuration problem"),
)


def explain(error: PneumoViewError) -> str:
    """``"<heading>: <reason> (<path>)"`` for the dialog."""
    heading = next((h for cls, h in ERROR_HEADINGS if isinstance(error, cls)), "Cannot use this model")
    return f"{heading}.\n{error.message}"


def check_paths(clip: str, llama: str, bundle: str | None, *, needs_base: bool = True) -> list[str]:
    """Problems found without loading anything (empty list = looks right). ``needs_base=False``
    for a bundle trained on the demo base weights (no CLIP / LLaMA files needed)."""
    problems = []
    if needs_base and not clip:
        problems.append("CLIP weights: choose the ViT-L/14 weights file.")
    elif needs_base and not Path(clip).is_file():
        problems.append(f"CLIP weights: no such file: {clip}")
    if needs_base and not llama:
        problems.append("LLaMA weights: choose the LLaMA-7B folder.")
    elif needs_base and not Path(llama).exists():
        problems.append(f"LLaMA weights: no such folder: {llama}")
    if bundle:
        from pneumoview.inference.manifest import check_bundle

        try:
            check_bundle(Path(bundle))
        except PneumoViewError as exc:
            problems.append(explain(exc))
    return problems


def pneumoview_command(*args: str) -> list[str]:
    """``pneumoview ARGS`` as a child process: the frozen app itself, or ``python -m pneumoview``."""
    if getattr(sys, "frozen", False):
        return [sys.executable, *args]
    return [sys.executable, "-m", "pneumoview", *args]


def import_reference_in_child(checkpoint: str, name: str = "") -> str:
    """Run ``pneumoview models import-reference CHECKPOINT --activate`` in a child process (torch is
    never imported here); returns the new registry id, or raises BundleError with the child's one line."""
    args = ["models", "import-reference", checkpoint, "--activate", *(["--name", name] if name else [])]
    try:
        done = subprocess.run(
            pneumoview_command(*args), capture_output=True, text=True, timeout=IMPORT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BundleError(f"the import did not finish: {exc}", path=checkpoint) from exc
    lines = done.stdout.split()
    if done.returncode == 0 and len(lines) >= 2 and lines[0] == "imported":
        return lines[1]
    last = (done.stderr.strip().splitlines() or ["the import failed"])[-1]
    raise BundleError(last.split(": error: ", 1)[-1])


class ModelSetupDialog(QDialog):
    """Set up the real model (or switch to the demo model)."""

    demoRequested = Signal()
    modelActivated = Signal(str)  # registry id of an imported (and activated) bundle

    def __init__(
        self, settings: Settings, parent: QWidget | None = None, *, client: AnalysisClient | None = None
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Model setup")
        self.setMinimumWidth(640)
        self._settings = copy.deepcopy(settings)
        self._own_client = client is None
        self.client = client or AnalysisClient()
        self.loaded: dict[str, Any] | None = None
        self._job: ValidateJob | None = None
        self._import_job: FunctionJob | None = None
        layout = QVBoxLayout(self)
        intro = QLabel(
            "PneumoLLM needs the frozen base models, which PneumoView cannot download for you "
            "(licences): OpenAI CLIP ViT-L/14 and LLaMA-7B, plus a trained adapter bundle "
            "(from the model registry, a colleague, or the retraining wizard)."
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)
        form = QFormLayout()
        self.clip_edit = QLineEdit(settings.clip_path or "")
        self.llama_edit = QLineEdit(settings.llama_path or "")
        self.bundle_edit = QLineEdit(settings.active_bundle or "")
        self.bundle_edit.setPlaceholderText("empty = the model registry's active bundle")
        form.addRow("CLIP ViT-L/14 file", path_row(self.clip_edit, self, folder=False, caption="CLIP weights"))
        form.addRow("LLaMA-7B folder", path_row(self.llama_edit, self, folder=True, caption="LLaMA folder"))
        form.addRow("Bundle folder", path_row(self.bundle_edit, self, folder=True, caption="Bundle folder"))
        self.device_combo, self.precision_combo = add_device_rows(form, settings)
        layout.addLayout(form)
        self.message = QLabel("")
        self.message.setObjectName("setupMessage")
        self.message.setWordWrap(True)
        layout.addWidget(self.message)
        buttons = QDialogButtonBox()
        self.validate_button = QPushButton("Validate (loads the model)")
        self.import_button = QPushButton("Import reference checkpoint...")
        self.import_button.setToolTip(
            "The reference PneumoLLM implementation's released checkpoint (.pth): "
            "registered as a bundle and activated; files with code are refused."
        )
        self.demo_button = QPushButton("Use demo model instead")
        buttons.addButton(self.validate_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(self.import_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(self.demo_button, QDialogButtonBox.ButtonRole.ActionRole)
        self.save_button = buttons.addButton(QDialogButtonBox.StandardButton.Save)
        buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        self.validate_button.clicked.connect(self.validate)
        self.import_button.clicked.connect(self.choose_reference_checkpoint)
        self.demo_button.clicked.connect(self._demo)
        buttons.accepted.connect(self._save)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def result_settings(self) -> Settings:
        s = copy.deepcopy(self._settings)
        s.clip_path = self.clip_edit.text().strip() or None
        s.llama_path = self.llama_edit.text().strip() or None
        s.active_bundle = self.bundle_edit.text().strip() or None
        s.device = self.device_combo.currentText()
        s.precision = self.precision_combo.currentText()
        return s

    def _model(self, s: Settings) -> ActiveModel | None:
        """The bundle these settings would run (explicit folder, else the registry's active one)."""
        return resolve_active_model(s, include_demo_choice=False)

    def check(self) -> bool:
        """Checks without torch; shows the problems and returns False if there are any."""
        s = self.result_settings()
        model = self._model(s)
        bundle = s.active_bundle or (str(model.bundle) if model is not None and model.bundle else None)
        problems = check_paths(
            s.clip_path or "", s.llama_path or "", bundle, needs_base=not (model is not None and model.demo)
        )
        if model is None:
            problems.append("Bundle: none given and the model registry has no active bundle.")
        self._show(problems, ok=False)
        return not problems

    def _show(self, problems: list[str], *, ok: bool, text: str = "") -> None:
        if problems:
            self.message.setStyleSheet("color:#b00020")
            self.message.setText("\n".join(problems))
        else:
            self.message.setStyleSheet("color:#1b5e20" if ok else "")
            self.message.setText(text)

    def validate(self) -> None:
        if not self.check():
            return
        s = self.result_settings()
        model = self._model(s)
        assert model is not None and model.bundle is not None
        self.validate_button.setEnabled(False)
        self._show([], ok=False, text="Loading the model to check it (this can take minutes)...")
        if model.demo:
            spec = EngineSpec("demo", bundle=str(model.bundle))
        else:
            spec = EngineSpec(
                "bundle",
                bundle=str(model.bundle),
                clip_path=s.clip_path or "",
                llama_path=s.llama_path or "",
                device=s.device,
                precision=s.precision,
            )
        self._job = ValidateJob(self.client, spec)
        self._job.signals.finished.connect(self._validated)
        self._job.signals.failed.connect(lambda msg: self._validated(PneumoViewError(msg)))
        from PySide6.QtCore import QThreadPool

        QThreadPool.globalInstance().start(self._job)

    def _validated(self, result: Any) -> None:
        self.validate_button.setEnabled(True)
        if isinstance(result, PneumoViewError):
            self.loaded = None
            self._show([explain(result)], ok=False)
            return
        self.loaded = result
        self._show([], ok=True, text=f"The model loads: {result.get('model_name', '')}\nPlan: {result.get('plan', '')}")

    # ------------------------------------------------------------------ reference checkpoint
    def choose_reference_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Reference checkpoint", "", "PyTorch checkpoints (*.pth *.pt *.bin);;All files (*)"
        )
        if path:
            self.import_reference(path)

    def import_reference(self, checkpoint: str) -> FunctionJob:
        """Import ``checkpoint`` in a child process (worker thread); the result shows in the dialog."""
        from PySide6.QtCore import QThreadPool

        self.import_button.setEnabled(False)
        self._show([], ok=False, text=f"Importing {Path(checkpoint).name} (reads tensors only)...")
        job = FunctionJob(import_reference_in_child, checkpoint)
        job.signals.finished.connect(self._imported)
        job.signals.failed.connect(lambda msg: self._imported(BundleError(msg)))
        self._import_job = job
        QThreadPool.globalInstance().start(job)
        return job

    def _imported(self, result: Any) -> None:
        self.import_button.setEnabled(True)
        if isinstance(result, PneumoViewError):
            self._show([f"The checkpoint was not imported.\n{result.message}"], ok=False)
            return
        self.bundle_edit.clear()  # use the registry's active bundle: the one just imported
        self._show(
            [],
            ok=True,
            text=f"Imported and activated as {result}. It runs on the CLIP / LLaMA "
            "weights above (the reference does not record which ones it was trained on).",
        )
        self.modelActivated.emit(str(result))

    def done(self, code: int) -> None:
        if self._job is not None and not self._job.done.is_set():
            self.client.cancel()
        if self._own_client:
            self.client.close()
        super().done(code)

    def _save(self) -> None:
        if self.check():
            self.accept()

    def _demo(self) -> None:
        self.demoRequested.emit()
        self.reject()
