"""Side panels of the main window: "what the model saw", reviewer decision (the result card is
:mod:`pneumoview.ui.result_card`, re-exported here).

They only show and ask: values come from :class:`pneumoview.session.ImageEntry` objects and
requests go out as Qt signals that the main window turns into session calls.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from pneumoview.labels import DECISIONS
from pneumoview.session import ImageEntry
from pneumoview.ui.result_card import DiagnosisPanel, NoModelBanner
from pneumoview.ui.result_card import label as _label
from pneumoview.ui.viewer import to_qimage

# Looks come from resources/styles/pneumoview.qss through these dynamic properties.


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
        self.comment.setTabChangesFocus(True)  # Tab leaves the box instead of typing a tab
        layout.addWidget(self.comment)
        self.whole_study = QCheckBox("Apply to every image of the study")
        layout.addWidget(self.whole_study)
        self.reviewer = _label()
        layout.addWidget(self.reviewer)
        bottom = QHBoxLayout()
        bottom.addStretch(1)
        self.save_button = QPushButton("Save decision")
        self.save_button.clicked.connect(self.save)
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

    def save(self) -> None:
        """Ask for the checked decision to be saved (Review > Save Decision, Ctrl+S)."""
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

    def choose_agree(self) -> None:
        self._choose("agree")

    def choose_disagree(self) -> None:
        self._choose("disagree")

    def choose_uncertain(self) -> None:
        self._choose("uncertain")

    def _choose(self, decision: str) -> None:
        """Check ``decision`` when an image is on screen (the Review menu's shortcuts)."""
        if self.buttons[decision].isEnabled():
            self.select(decision)
            self.saved.setText(f"'{decision}' chosen: Ctrl+S saves it.")


def entry_summary(entry: ImageEntry) -> str:
    """One line for the status bar."""
    r = entry.record
    return (
        f"{r.patient_name or r.patient_id}  {r.modality} {r.view_position}  {r.rows}x{r.columns}  {entry.status_text()}"
    )


__all__ = ["DiagnosisPanel", "ModelInputPanel", "NoModelBanner", "ReviewPanel", "entry_summary"]
