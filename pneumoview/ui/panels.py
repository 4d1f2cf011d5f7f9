"""Side panels of the main window: diagnosis, "what the model saw", reviewer decision.

They only show and ask: values come from :class:`pneumoview.session.ImageEntry` objects and
requests go out as Qt signals that the main window turns into session calls.
"""

from __future__ import annotations

import html

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from pneumoview.labels import DECISIONS, DEMO_MARK
from pneumoview.results import ImageResult
from pneumoview.session import ImageEntry
from pneumoview.ui.viewer import to_qimage

# Looks come from resources/styles/pneumoview.qss through these dynamic properties.


def _label(text: str = "", *, wrap: bool = True, selectable: bool = False) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(wrap)
    if selectable:
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


class NoModelBanner(QFrame):
    """Shown while no model is installed: says so plainly, offers setup and the demo model."""

    setupRequested = Signal()
    demoRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("noModelBanner")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        layout = QVBoxLayout(self)
        self.text = _label(
            "<b>No model is installed.</b><br>Analysis needs the PneumoLLM base weights "
            "(CLIP ViT-L/14 and LLaMA-7B) and a trained adapter bundle. You can set them up now, "
            "or try the application with the built-in demo model (random weights: its output is "
            f"<b>{DEMO_MARK}</b>)."
        )
        layout.addWidget(self.text)
        buttons = QHBoxLayout()
        self.setup_button = QPushButton("Set up model...")
        self.demo_button = QPushButton("Use demo model")
        self.setup_button.clicked.connect(self.setupRequested)
        self.demo_button.clicked.connect(self.demoRequested)
        buttons.addWidget(self.setup_button)
        buttons.addWidget(self.demo_button)
        buttons.addStretch(1)
        layout.addLayout(buttons)


class DiagnosisPanel(QGroupBox):
    """Probability of pneumoconiosis, label at the current threshold, model and device used."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Diagnosis", parent)
        layout = QVBoxLayout(self)
        self.no_model = NoModelBanner()
        self.no_model.hide()
        layout.addWidget(self.no_model)
        self.demo_mark = _label(DEMO_MARK)
        self.demo_mark.setObjectName("demoMark")
        self.demo_mark.setProperty("role", "demo-banner")
        self.demo_mark.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.demo_mark.hide()
        layout.addWidget(self.demo_mark)
        self.headline = _label()
        self.headline.setObjectName("headline")
        font = self.headline.font()
        font.setBold(True)
        self.headline.setFont(font)
        layout.addWidget(self.headline)
        self.probability = _label()
        self.probability.setObjectName("probability")
        self.probability.setProperty("role", "probability")
        layout.addWidget(self.probability)
        self.details = _label(selectable=True)
        self.details.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(self.details)
        layout.addStretch(1)
        self.threshold = 0.5
        self.model_text = ""  # "name, id, device" of the loaded engine (if any)
        self.show_entry(None)

    def set_model_installed(self, installed: bool) -> None:
        self.no_model.setVisible(not installed)

    def show_entry(self, entry: ImageEntry | None) -> None:
        self.demo_mark.hide()
        self.probability.setText("")
        self.probability.hide()
        if entry is None:
            self.headline.setText("No image selected")
            self.details.setText("")
            return
        if not entry.diagnosable:
            s = entry.suitability
            code, reason = (s.code, s.reason) if s is not None else ("", "")
            self.headline.setText(f"Not analysable: {code or 'unsupported'}")
            self.details.setText(f"{reason}<br><i>PneumoLLM is for frontal (PA/AP) chest radiographs.</i>")
            return
        result = entry.result
        if result is None or not result.is_analysed:
            self.headline.setText("Not analysed yet" if result is None else f"Analysis failed: {result.reason_code}")
            if result is not None:
                self.details.setText(html.escape(result.reason))
            else:
                self.details.setText(
                    f"Failed: {html.escape(entry.error)}" if entry.error else "Use Analysis > Analyse selected."
                )
            return
        demo = f" [{DEMO_MARK}]" if result.demo else ""
        self.headline.setText(f"Probability of pneumoconiosis{demo}")
        self.probability.setText(f"{result.probability:.3f}  {result.shown_label}")
        self.probability.show()
        self.demo_mark.setVisible(result.demo)
        rows = self._label_row(result) + _quality_rows(result) + _provenance_rows(result) + _warning_rows(entry)
        self.details.setText(
            "<table>"
            + "".join(f"<tr><td style='padding-right:8px'>{k}</td><td>{v}</td></tr>" for k, v in rows)
            + "</table>"
        )

    def _label_row(self, result: ImageResult) -> list[tuple[str, str]]:
        """The label at the result's threshold, and what it would be at the current settings' threshold."""
        prov = result.provenance
        threshold = prov.threshold if prov.threshold is not None else self.threshold
        label_text = f"<b>{html.escape(result.label)}</b> at threshold {threshold:.2f}"
        now = result.label_at(self.threshold)
        if abs(threshold - self.threshold) > 1e-9 and now != result.label:
            label_text += (
                f"<br><span style='color:#a05000'>at the current threshold {self.threshold:.2f} it would be "
                f"{html.escape(now)}: analyse again to apply it</span>"
            )
        return [("Label", label_text)]


def _quality_rows(result: ImageResult) -> list[tuple[str, str]]:
    """The image-quality gate's verdict given before the model ran (none when it did not run)."""
    if result.below_quality_gate is None:
        return []
    codes = html.escape(", ".join(result.quality_codes))
    if result.below_quality_gate:
        return [("Image quality", f"<span style='color:#a05000'><b>BELOW THE GATE</b> ({codes})</span>")]
    return [("Image quality", f"passed (caution: {codes})" if codes else "passed")]


def _provenance_rows(result: ImageResult) -> list[tuple[str, str]]:
    """Where the result came from (its provenance), as (name, HTML) rows."""
    prov = result.provenance
    box = prov.crop_box
    base = "<br>".join(
        f"{html.escape(k)} <code>{html.escape(v[:24])}</code>" for k, v in sorted(prov.base_fingerprints.items())
    )
    rows = [
        ("Model", html.escape(prov.bundle_name)),
        ("Version", html.escape(prov.bundle_id)),
        ("Bundle fingerprint", f"<code>{prov.model_fingerprint or 'unknown'}</code>"),
        ("Base weights", base or "unknown"),
        ("Operating point", html.escape(prov.operating_point_id) or "threshold from settings"),
        ("Device / plan", html.escape(prov.plan or prov.device or "unknown")),
        ("Lung box", " ".join(str(v) for v in box) if box else "unknown"),
        ("Software", f"PneumoView {html.escape(prov.software_version)}" if prov.software_version else "unknown"),
        ("Analysed", html.escape(result.analysed_at)),
    ]
    if prov.crop_fallback:
        rows.append(("Lung box", "<span style='color:#a05000'>not found: whole image used</span>"))
    return rows


def _warning_rows(entry: ImageEntry) -> list[tuple[str, str]]:
    """Re-review and duplicate-UID warnings for ``entry``."""
    rows = []
    if entry.review_status == "needs re-review":
        warning = "<b>needs re-review</b>: the result changed since the decision"
        rows.append(("Review", f"<span style='color:#a05000'>{warning}</span>"))
    if entry.duplicates:
        rows.append(("Duplicate UID", "<br>".join(html.escape(p) for p in entry.duplicates)))
    return rows


class ModelInputPanel(QGroupBox):
    """The crop exactly as the model sees it (``pneumoview.preprocess.prepare``), 224 x 224."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("What the model saw", parent)
        layout = QVBoxLayout(self)
        self.image = QLabel("")
        self.image.setObjectName("modelCrop")
        self.image.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.image.setMinimumSize(224, 224)
        layout.addWidget(self.image, 0, Qt.AlignmentFlag.AlignHCenter)
        self.warning = _label()
        self.warning.setObjectName("fallbackWarning")
        self.warning.setProperty("role", "warning")
        self.warning.hide()
        layout.addWidget(self.warning)
        self.notes = _label()
        layout.addWidget(self.notes)

    def show_message(self, text: str) -> None:
        self.image.setPixmap(QPixmap())
        self.image.setText(text)
        self.warning.hide()
        self.notes.setText("")

    def show_input(self, crop: np.ndarray, fallback: bool, notes: list[str] | tuple[str, ...] = ()) -> None:
        """``crop``: float32 [224,224] in [0,1] (1 = white)."""
        grey = np.clip(np.asarray(crop, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        self.image.setText("")
        self.image.setPixmap(QPixmap.fromImage(to_qimage(grey)))
        self.warning.setText(
            "Lungs not found: the model saw the whole image (resized). Check that this is a frontal chest radiograph."
        )
        self.warning.setVisible(bool(fallback))
        self.notes.setText("; ".join(notes))


class ReviewPanel(QGroupBox):
    """Agree / disagree / uncertain and a comment, for the image or the whole study."""

    decisionRequested = Signal(str, str, bool)  # decision, comment, whole study

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Reviewer decision", parent)
        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        self.group = QButtonGroup(self)
        self.buttons: dict[str, QPushButton] = {}
        for decision in DECISIONS:
            button = QPushButton(decision.capitalize())
            button.setCheckable(True)
            button.setProperty("decision", decision)
            button.setObjectName(f"decision_{decision}")
            self.group.addButton(button)
            self.buttons[decision] = button
            row.addWidget(button)
        layout.addLayout(row)
        self.comment = QPlainTextEdit()
        self.comment.setPlaceholderText("Comment (optional)")
        self.comment.setMaximumHeight(70)
        layout.addWidget(self.comment)
        self.whole_study = QCheckBox("Apply to every image of the study")
        layout.addWidget(self.whole_study)
        self.reviewer = _label()
        layout.addWidget(self.reviewer)
        bottom = QHBoxLayout()
        bottom.addStretch(1)
        self.save_button = QPushButton("Save decision")
        self.save_button.clicked.connect(self._save)
        bottom.addWidget(self.save_button)
        layout.addLayout(bottom)
        self.saved = _label()
        layout.addWidget(self.saved)
        self.set_reviewer("")
        self.show_entry(None)

    def set_reviewer(self, name: str) -> None:
        self.reviewer.setText(
            f"Reviewer: <b>{name}</b>" if name else "Reviewer: <i>not set (Settings > Reviewer name)</i>"
        )

    def _save(self) -> None:
        checked = self.group.checkedButton()
        if checked is None:
            self.saved.setText("Choose agree, disagree or uncertain first.")
            return
        decision = next(d for d, b in self.buttons.items() if b is checked)
        self.decisionRequested.emit(decision, self.comment.toPlainText().strip(), self.whole_study.isChecked())

    def show_entry(self, entry: ImageEntry | None) -> None:
        enabled = entry is not None
        for button in self.buttons.values():
            button.setEnabled(enabled)
        self.comment.setEnabled(enabled)
        self.save_button.setEnabled(enabled)
        self.whole_study.setEnabled(enabled)
        self.group.setExclusive(False)
        for button in self.buttons.values():
            button.setChecked(False)
        self.group.setExclusive(True)
        self.comment.setPlainText("")
        self.saved.setText("")
        if entry is not None and entry.decision is not None:
            d = entry.decision
            self.buttons[d.decision].setChecked(True)
            self.comment.setPlainText(d.comment)
            self.saved.setText(f"Saved: {d.decision} by {d.reviewer or 'unknown'} at {d.decided_at}")

    def select(self, decision: str) -> None:
        self.buttons[decision].setChecked(True)


def entry_summary(entry: ImageEntry) -> str:
    """One line for the status bar."""
    r = entry.record
    return (
        f"{r.patient_name or r.patient_id}  {r.modality} {r.view_position}  {r.rows}x{r.columns}  {entry.status_text()}"
    )
