"""The result card: the answer first (AI score, label at the operating point, DEMO state), the
technical provenance (plan, fingerprints, versions, lung box) behind a collapsed expander.

Values come from :class:`pneumoview.session.ImageEntry` and its :class:`pneumoview.results.ImageResult`;
the card only shows them.
"""

from __future__ import annotations

import html

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QGroupBox, QHBoxLayout, QLabel, QPushButton, QToolButton, QVBoxLayout, QWidget

from pneumoview.labels import DEMO_MARK
from pneumoview.results import REVIEW_NEEDED, ImageResult
from pneumoview.session import ImageEntry


def label(text: str = "", *, wrap: bool = True, selectable: bool = False) -> QLabel:
    """A word-wrapped label (optionally selectable with the mouse)."""
    widget = QLabel(text)
    widget.setWordWrap(wrap)
    if selectable:
        widget.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return widget


class NoModelBanner(QFrame):
    """Shown while no model is installed: says so plainly, offers setup and the demo model."""

    setupRequested = Signal()
    demoRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("noModelBanner")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        layout = QVBoxLayout(self)
        self.text = label(
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


def _rows_html(rows: list[tuple[str, str]]) -> str:
    return (
        "<table>"
        + "".join(f"<tr><td style='padding-right:8px'>{k}</td><td>{v}</td></tr>" for k, v in rows)
        + "</table>"
    )


class DiagnosisPanel(QGroupBox):
    """The AI result card: ``headline`` and ``probability`` (the answer), ``answer`` (label at the
    operating point, warnings), and ``details`` (provenance) shown only when ``expander`` is opened."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("AI result", parent)
        self.setObjectName("resultCard")
        layout = QVBoxLayout(self)
        self.no_model = NoModelBanner()
        self.no_model.hide()
        layout.addWidget(self.no_model)
        self.demo_mark = label(DEMO_MARK)
        self.demo_mark.setObjectName("demoMark")
        self.demo_mark.setProperty("role", "demo-banner")
        self.demo_mark.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.demo_mark.hide()
        layout.addWidget(self.demo_mark)
        self.headline = label()
        self.headline.setObjectName("headline")
        font = self.headline.font()
        font.setBold(True)
        self.headline.setFont(font)
        layout.addWidget(self.headline)
        self.probability = label()
        self.probability.setObjectName("probability")
        self.probability.setProperty("role", "probability")
        layout.addWidget(self.probability)
        self.answer = label(selectable=True)
        self.answer.setObjectName("answer")
        self.answer.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(self.answer)
        self.expander = QToolButton()
        self.expander.setObjectName("detailsExpander")
        self.expander.setText("Technical details")
        self.expander.setCheckable(True)
        self.expander.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.expander.setArrowType(Qt.ArrowType.RightArrow)
        self.expander.toggled.connect(self._expand)
        layout.addWidget(self.expander)
        self.details = label(selectable=True)
        self.details.setObjectName("provenance")
        self.details.setTextFormat(Qt.TextFormat.RichText)
        self.details.hide()
        layout.addWidget(self.details)
        self.threshold = 0.5
        self.model_text = ""  # "name, id, device" of the loaded engine (if any)
        self.show_entry(None)

    def _expand(self, open_: bool) -> None:
        self.expander.setArrowType(Qt.ArrowType.DownArrow if open_ else Qt.ArrowType.RightArrow)
        self.details.setVisible(open_)

    def set_model_installed(self, installed: bool) -> None:
        self.no_model.setVisible(not installed)

    def show_entry(self, entry: ImageEntry | None) -> None:
        self.demo_mark.hide()
        self.probability.setText("")
        self.probability.hide()
        self.answer.setText("")
        self.details.setText("")
        self.expander.setVisible(False)
        if entry is None:
            self.headline.setText("No image selected")
            return
        if not entry.diagnosable:
            s = entry.suitability
            code, reason = (s.code, s.reason) if s is not None else ("", "")
            self.headline.setText(f"Not analysable: {code or 'unsupported'}")
            self.answer.setText(f"{html.escape(reason)}<br><i>PneumoLLM is for frontal (PA/AP) chest radiographs.</i>")
            return
        result = entry.result
        if result is None or not result.is_analysed:
            self.headline.setText("Not analysed yet" if result is None else f"Analysis failed: {result.reason_code}")
            if result is not None:
                self.answer.setText(html.escape(result.reason))
            else:
                self.answer.setText(
                    f"Failed: {html.escape(entry.error)}"
                    if entry.error
                    else "Use Analysis > Analyse Selected (Ctrl+R)."
                )
            return
        demo = f" [{DEMO_MARK}]" if result.demo else ""
        self.headline.setText(f"Probability of pneumoconiosis{demo}")
        self.probability.setText(f"{result.probability:.3f}")
        self.probability.show()
        self.demo_mark.setVisible(result.demo)
        self.answer.setText(_rows_html(self._label_row(result) + _quality_rows(result) + _warning_rows(entry)))
        self.details.setText(_rows_html(_provenance_rows(result)))
        self.expander.setVisible(True)

    def _label_row(self, result: ImageResult) -> list[tuple[str, str]]:
        """The label at the result's operating point, and what it would be at the settings' threshold."""
        prov = result.provenance
        threshold = prov.threshold if prov.threshold is not None else self.threshold
        point = f"operating point {html.escape(prov.operating_point_id)}, " if prov.operating_point_id else ""
        label_text = f"<b>{html.escape(result.shown_label)}</b><br>at {point}threshold {threshold:.2f}"
        now = result.label_at(self.threshold)
        if abs(threshold - self.threshold) > 1e-9 and now != result.label:
            label_text += (
                f"<br><span style='color:#a05000'>at the current threshold {self.threshold:.2f} it would be "
                f"{html.escape(now)}: analyse again to apply it</span>"
            )
        return [("AI label", label_text)]


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
    """Re-review and duplicate-UID warnings for ``entry`` (part of the answer, never hidden)."""
    rows = []
    if entry.review_status == REVIEW_NEEDED:
        warning = "<b>needs re-review</b>: the result changed since the decision"
        rows.append(("Review", f"<span style='color:#a05000'>{warning}</span>"))
    if entry.duplicates:
        rows.append(("Duplicate UID", "<br>".join(html.escape(p) for p in entry.duplicates)))
    return rows


__all__ = ["DiagnosisPanel", "NoModelBanner", "label"]
