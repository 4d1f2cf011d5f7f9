"""Settings dialog: weight paths, active bundle, device/precision/quantisation, model idle release, threshold,
reviewer, the ILO final-determination rule, export defaults.

Edits a copy of :class:`pneumoview.settings.Settings`; the main window saves it
(:func:`pneumoview.settings.save_settings`, atomic JSON) when the dialog is accepted. Every
precision / quantisation offered comes from :mod:`pneumoview.precision` and builds a plan.
"""

from __future__ import annotations

import copy
from pathlib import Path

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from pneumoview.errors import ConfigError, PneumoViewError
from pneumoview.precision import Quantisation
from pneumoview.reading.rules import FinalRule
from pneumoview.settings import CSV_DELIMITERS, DEVICES, PRECISIONS, QUANTISATIONS, Settings

REGISTRY_CHOICE = "(the model registry's active bundle)"

#: The final-determination rules offered (every combination :class:`FinalRule` supports), default first.
FINAL_RULES: tuple[FinalRule, ...] = (
    FinalRule("binary", True),
    FinalRule("binary", False),
    FinalRule("major", True),
    FinalRule("major", False),
)


def rule_text(rule: FinalRule) -> str:
    """How a :class:`FinalRule` reads in the settings ("two readers agree on 0 vs 1/2/3 and ...")."""
    category = "0 vs 1/2/3" if rule.agree_on == "binary" else "the major category 0/1/2/3"
    large = " and on large opacities" if rule.large_opacities else ""
    return f"Two readers agree on {category}{large}; otherwise a third reader arbitrates"


def add_device_rows(form: QFormLayout, settings: Settings) -> tuple[QComboBox, QComboBox]:
    """Device and precision pickers (``auto`` first), set from ``settings``, added to ``form``."""
    device_combo = QComboBox()
    device_combo.addItems(list(DEVICES))
    device_combo.setCurrentText(settings.device)
    precision_combo = QComboBox()
    precision_combo.addItems(list(PRECISIONS))
    precision_combo.setCurrentText(settings.precision)
    form.addRow("Device", device_combo)
    form.addRow("Precision", precision_combo)
    return device_combo, precision_combo


def quantisations_for(device: str) -> list[str]:
    """Quantisations that work on ``device`` (all of them on the CPU and CUDA; none on Apple's GPU)."""
    if device == "mps":
        return [Quantisation.AUTO.value, Quantisation.NONE.value]
    return list(QUANTISATIONS)


def add_memory_rows(form: QFormLayout, settings: Settings, device_combo: QComboBox) -> tuple[QComboBox, QSpinBox]:
    """LLaMA quantisation picker (follows the device picker) and the idle minutes before the model is released."""
    quant_combo = QComboBox()
    quant_combo.setToolTip(
        "auto: 8-bit only when memory is short; int8 / int4: smaller and, on the CPU, faster, "
        "with slightly different probabilities; nf4: 4-bit on a GPU (bitsandbytes)"
    )

    def refill(device: str) -> None:
        current = quant_combo.currentText() or settings.quantisation
        quant_combo.clear()
        quant_combo.addItems(quantisations_for(device))
        quant_combo.setCurrentText(current if current in quantisations_for(device) else Quantisation.AUTO.value)

    refill(device_combo.currentText())
    device_combo.currentTextChanged.connect(refill)
    idle_spin = QSpinBox()
    idle_spin.setRange(0, 24 * 60)
    idle_spin.setSuffix(" min")
    idle_spin.setSpecialValueText("never")
    idle_spin.setValue(settings.model_idle_minutes)
    form.addRow("LLaMA quantisation", quant_combo)
    form.addRow("Release the model after idle", idle_spin)
    return quant_combo, idle_spin


def path_row(edit: QLineEdit, parent: QWidget, *, folder: bool, caption: str) -> QHBoxLayout:
    """A line edit with a Browse... button (file or folder)."""
    row = QHBoxLayout()
    row.addWidget(edit, 1)
    button = QPushButton("Browse...")

    def browse() -> None:
        start = edit.text() or str(Path.home())
        if folder:
            chosen = QFileDialog.getExistingDirectory(parent, caption, start)
        else:
            chosen, _ = QFileDialog.getOpenFileName(parent, caption, start)
        if chosen:
            edit.setText(chosen)

    button.clicked.connect(browse)
    row.addWidget(button)
    return row


class SettingsDialog(QDialog):
    """Every user setting in one form."""

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("PneumoView settings")
        self._settings = copy.deepcopy(settings)
        layout = QVBoxLayout(self)
        layout.addWidget(self._model_group(settings))
        layout.addWidget(self._review_group(settings))
        layout.addWidget(self._export_group(settings))
        self.error_label = QLabel("")
        self.error_label.setStyleSheet("color:#b00020")
        self.error_label.setWordWrap(True)
        layout.addWidget(self.error_label)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def _model_group(self, settings: Settings) -> QGroupBox:
        model = QGroupBox("Model")
        form = QFormLayout(model)
        self.clip_edit = QLineEdit(settings.clip_path or "")
        self.clip_edit.setPlaceholderText("CLIP ViT-L/14 weights file (ViT-L-14.pt, open_clip .bin, .safetensors)")
        self.llama_edit = QLineEdit(settings.llama_path or "")
        self.llama_edit.setPlaceholderText("LLaMA-7B folder (Hugging Face or Meta consolidated.*.pth)")
        form.addRow("CLIP weights", path_row(self.clip_edit, self, folder=False, caption="CLIP weights"))
        form.addRow("LLaMA weights", path_row(self.llama_edit, self, folder=True, caption="LLaMA folder"))
        self.bundle_combo = QComboBox()
        self.bundle_combo.setEditable(True)
        self.bundle_combo.addItem(REGISTRY_CHOICE, None)
        for entry in self._registry_entries():
            self.bundle_combo.addItem(f"{entry.name}  ({entry.id})", str(entry.path))
        if settings.active_bundle:
            index = self.bundle_combo.findData(settings.active_bundle)
            if index < 0:
                self.bundle_combo.addItem(settings.active_bundle, settings.active_bundle)
                index = self.bundle_combo.count() - 1
            self.bundle_combo.setCurrentIndex(index)
        form.addRow("Active bundle", self.bundle_combo)
        self.device_combo, self.precision_combo = add_device_rows(form, settings)
        self.quantisation_combo, self.idle_spin = add_memory_rows(form, settings, self.device_combo)
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(0.01, 0.99)
        self.threshold_spin.setSingleStep(0.01)
        self.threshold_spin.setDecimals(2)
        self.threshold_spin.setValue(settings.threshold)
        form.addRow("Threshold (P >= threshold is positive)", self.threshold_spin)
        return model

    def _review_group(self, settings: Settings) -> QGroupBox:
        review = QGroupBox("Review")
        rform = QFormLayout(review)
        self.reviewer_edit = QLineEdit(settings.reviewer_name)
        self.reviewer_edit.setPlaceholderText("Kept with every decision you save")
        rform.addRow("Reviewer name", self.reviewer_edit)
        self.standards_edit = QLineEdit(settings.ilo_standards_folder)  # pneumoview.standards
        self.standards_edit.setPlaceholderText("The clinic's own licensed ILO standard radiographs (not shipped)")
        caption = "ILO standard images folder"
        rform.addRow(caption, path_row(self.standards_edit, self, folder=True, caption=caption))
        self.final_rule_combo = QComboBox()
        self.final_rule_combo.setObjectName("final_rule")
        for rule in FINAL_RULES:
            self.final_rule_combo.addItem(rule_text(rule), rule.to_json_dict())
        try:
            current = FinalRule.from_json_dict(settings.final_rule or {})
        except PneumoViewError:
            current = FinalRule()
        self.final_rule_combo.setCurrentIndex(max(0, FINAL_RULES.index(current) if current in FINAL_RULES else 0))
        rform.addRow("ILO final determination", self.final_rule_combo)
        return review

    def _export_group(self, settings: Settings) -> QGroupBox:
        export = QGroupBox("CSV export defaults")
        eform = QFormLayout(export)
        self.pseudonymise_check = QCheckBox("Pseudonymise by default")
        self.pseudonymise_check.setChecked(settings.export.pseudonymise)
        self.names_check = QCheckBox("Include patient names")
        self.names_check.setChecked(settings.export.include_names)
        self.paths_check = QCheckBox("Include source file paths")
        self.paths_check.setChecked(settings.export.include_source_path)
        self.delimiter_combo = QComboBox()
        for d in CSV_DELIMITERS:
            self.delimiter_combo.addItem({"\t": "Tab"}.get(d, d), d)
        self.delimiter_combo.setCurrentIndex(max(0, self.delimiter_combo.findData(settings.export.delimiter)))
        for w in (self.pseudonymise_check, self.names_check, self.paths_check):
            eform.addRow("", w)
        eform.addRow("Separator", self.delimiter_combo)
        return export

    @staticmethod
    def _registry_entries() -> list:
        try:
            from pneumoview.registry import ModelRegistry

            return ModelRegistry().list()
        except PneumoViewError:
            return []

    def result_settings(self) -> Settings:
        s = copy.deepcopy(self._settings)
        s.clip_path = self.clip_edit.text().strip() or None
        s.llama_path = self.llama_edit.text().strip() or None
        data = self.bundle_combo.currentData()
        text = self.bundle_combo.currentText().strip()
        s.active_bundle = data if data else (None if text in ("", REGISTRY_CHOICE) else text)
        s.device = self.device_combo.currentText()
        s.precision = self.precision_combo.currentText()
        s.quantisation = self.quantisation_combo.currentText()
        s.model_idle_minutes = int(self.idle_spin.value())
        s.threshold = round(float(self.threshold_spin.value()), 4)
        s.reviewer_name = self.reviewer_edit.text().strip()
        s.ilo_standards_folder = self.standards_edit.text().strip()
        s.final_rule = dict(self.final_rule_combo.currentData())
        s.export.pseudonymise = self.pseudonymise_check.isChecked()
        s.export.include_names = self.names_check.isChecked()
        s.export.include_source_path = self.paths_check.isChecked()
        s.export.delimiter = self.delimiter_combo.currentData()
        return s

    def accept(self) -> None:
        try:
            self.result_settings().validate()
        except ConfigError as exc:
            self.error_label.setText(exc.message)
            return
        super().accept()
