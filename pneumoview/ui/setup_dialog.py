"""Model setup dialog: paths to the CLIP and LLaMA weights and a bundle, validated with clear messages.

Cheap checks run at once (paths exist, the bundle's manifest and safetensors headers, via
:func:`pneumoview.registry.validate_bundle`, no torch); "Validate" then loads the model in the
analysis process (:mod:`pneumoview.ui.analysis_process`, ``InferenceEngine.load``), whose specific
errors are shown as headings: wrong file or architecture (WeightsError), fingerprint mismatch, not enough
memory, bad bundle. The demo model is one click away.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from pneumoview.errors import (
    BundleError,
    ConfigError,
    FingerprintMismatchError,
    InsufficientMemoryError,
    PneumoViewError,
    WeightsError,
)
from pneumoview.settings import Settings
from pneumoview.ui.settings_dialog import add_device_rows, path_row
from pneumoview.ui.analysis_process import AnalysisClient, EngineSpec
from pneumoview.ui.workers import ValidateJob

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


def check_paths(clip: str, llama: str, bundle: str | None) -> list[str]:
    """Problems found without loading anything (empty list = looks right)."""
    problems = []
    if not clip:
        problems.append("CLIP weights: choose the ViT-L/14 weights file.")
    elif not Path(clip).is_file():
        problems.append(f"CLIP weights: no such file: {clip}")
    if not llama:
        problems.append("LLaMA weights: choose the LLaMA-7B folder.")
    elif not Path(llama).exists():
        problems.append(f"LLaMA weights: no such folder: {llama}")
    if bundle:
        from pneumoview.registry import validate_bundle
        try:
            validate_bundle(Path(bundle))
        except PneumoViewError as exc:
            problems.append(explain(exc))
    return problems


class ModelSetupDialog(QDialog):
    """Set up the real model (or switch to the demo model)."""

    demoRequested = Signal()

    def __init__(self, settings: Settings, parent: QWidget | None = None, *,
                 client: AnalysisClient | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Model setup")
        self.setMinimumWidth(640)
        self._settings = copy.deepcopy(settings)
        self._own_client = client is None
        self.client = client or AnalysisClient()
        self.loaded: dict[str, Any] | None = None
        self._job: ValidateJob | None = None
        layout = QVBoxLayout(self)
        intro = QLabel(
            "PneumoLLM needs the frozen base models, which PneumoView cannot download for you "
            "(licences): OpenAI CLIP ViT-L/14 and LLaMA-7B, plus a trained adapter bundle "
            "(from the model registry, a colleague, or the retraining wizard).")
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
        self.demo_button = QPushButton("Use demo model instead")
        buttons.addButton(self.validate_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(self.demo_button, QDialogButtonBox.ButtonRole.ActionRole)
        self.save_button = buttons.addButton(QDialogButtonBox.StandardButton.Save)
        buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        self.validate_button.clicked.connect(self.validate)
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

    def _bundle(self, s: Settings) -> Path | None:
        if s.active_bundle:
            return Path(s.active_bundle)
        from pneumoview.ui.main_window import active_bundle_path
        return active_bundle_path(None)

    def check(self) -> bool:
        """Cheap checks; shows the problems and returns False if there are any."""
        s = self.result_settings()
        problems = check_paths(s.clip_path or "", s.llama_path or "", s.active_bundle)
        if not s.active_bundle and self._bundle(s) is None:
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
        bundle = self._bundle(s)
        assert bundle is not None
        self.validate_button.setEnabled(False)
        self._show([], ok=False, text="Loading the model to check it (this can take minutes)...")
        spec = EngineSpec("bundle", bundle=str(bundle), clip_path=s.clip_path or "", llama_path=s.llama_path or "",
                          device=s.device, precision=s.precision)
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
        self._show([], ok=True, text=f"The model loads: {result.get('model_name', '')}\n"
                                     f"Plan: {result.get('plan', '')}")

    def done(self, code: int) -> None:  # noqa: D401 - QDialog override
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
