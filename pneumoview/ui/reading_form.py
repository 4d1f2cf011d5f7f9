"""The ILO 2022 reading form: a self-contained widget over :class:`pneumoview.reading.ilo.Reading`.

The widget only collects and shows; every rule comes from the Qt-free validator
(:meth:`Reading.problems`), whose messages are listed under the form, the first offending field
getting the focus. The AI suggestion is a read-only label beside the form: nothing the model says
is ever written into a field.

Keyboard: Tab / Shift+Tab move between fields (also out of the comment box), Space toggles a
check box, arrow keys or typing choose in a list, and the shortcuts in :data:`SHORTCUTS` jump to
the main fields, fill a normal film, and submit (Ctrl+Enter).
"""

from __future__ import annotations

from typing import TypeVar

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from pneumoview.reading.ilo import (
    DIFFUSE_SITES,
    EXTENTS,
    FILM_QUALITY,
    LARGE_OPACITIES,
    PLAQUE_SITES,
    PROFUSION,
    SHAPES,
    SIDES,
    SITE_NAMES,
    SYMBOLS,
    WIDTHS,
    ZONE_NAMES,
    ZONES,
    PleuralThickening,
    Reading,
)
from pneumoview.reading.rules import AiSuggestion

#: (action, key sequence, what it does): the form's shortcuts, active while the form has focus.
SHORTCUTS: tuple[tuple[str, str, str], ...] = (
    ("quality", "Alt+Q", "film quality"),
    ("profusion", "Alt+P", "profusion (12-point scale)"),
    ("shape", "Alt+S", "primary shape/size"),
    ("zones", "Alt+Z", "zones (first: right upper)"),
    ("large", "Alt+L", "large opacities"),
    ("pleural", "Alt+E", "pleural plaques (first box)"),
    ("symbols", "Alt+Y", "symbols (first: aa)"),
    ("comments", "Alt+C", "comments"),
    ("normal", "Alt+N", "fill a normal film: quality 1, profusion 0/0, nothing else"),
    ("submit", "Ctrl+Return", "submit the reading"),
    ("submit", "Ctrl+Enter", "submit the reading (keypad Enter)"),
)


W = TypeVar("W", bound=QWidget)


def named(widget: W, name: str) -> W:
    """``widget`` with its object name set (tests and style sheets find fields by it)."""
    widget.setObjectName(name)
    return widget


#: How a validation error's ``field`` is named in the form's messages.
FIELD_LABELS: dict[str, str] = {
    "film_quality": "Quality",
    "film_quality_reason": "Quality reason",
    "profusion": "Profusion",
    "primary_shape": "Shape/size",
    "secondary_shape": "Secondary shape/size",
    "zones": "Zones",
    "large_opacities": "Large opacities",
    "plaques": "Pleural plaques",
    "costophrenic_obliteration": "Costophrenic angle",
    "diffuse_thickening": "Diffuse pleural thickening",
    "symbols": "Symbols",
    "comments": "Comments",
}


def _combo(name: str, items: list[tuple[str, object]]) -> QComboBox:
    box = QComboBox()
    box.setObjectName(name)
    for text, data in items:
        box.addItem(text, data)
    return box


class _Pleura(QGroupBox):
    """Sites x sides, calcification, extent and width per side (plaques or diffuse thickening)."""

    def __init__(self, title: str, prefix: str, sites: tuple[str, ...]) -> None:
        super().__init__(title)
        self.prefix, self.site_names = prefix, sites
        grid = QGridLayout(self)
        grid.setContentsMargins(6, 4, 6, 4)
        grid.setVerticalSpacing(2)
        for col, text in enumerate(("site", "R", "L", "calcified R", "calcified L")):
            grid.addWidget(QLabel(f"<i>{text}</i>"), 0, col)
        self.boxes: dict[tuple[str, str, str], QCheckBox] = {}
        for row, site in enumerate(sites, start=1):
            grid.addWidget(QLabel(SITE_NAMES[site]), row, 0)
            for col, (kind, side) in enumerate((("site", "R"), ("site", "L"), ("calc", "R"), ("calc", "L")), start=1):
                box = QCheckBox()
                box.setObjectName(f"{prefix}_{kind}_{site}_{side}")
                box.setAccessibleName(f"{title} {SITE_NAMES[site]} {'calcified ' if kind == 'calc' else ''}{side}")
                self.boxes[(kind, site, side)] = box
                grid.addWidget(box, row, col)
        row = len(sites) + 1
        self.extents: dict[str, QComboBox] = {}
        self.widths: dict[str, QComboBox] = {}
        for side in SIDES:
            self.extents[side] = _combo(
                f"{prefix}_extent_{side}", [("extent -", None)] + [(f"extent {e}", e) for e in EXTENTS]
            )
            self.widths[side] = _combo(
                f"{prefix}_width_{side}", [("width -", None)] + [(f"width {w}", w) for w in WIDTHS]
            )
        grid.addWidget(QLabel("chest wall R"), row, 0)
        grid.addWidget(self.extents["R"], row, 1, 1, 2)
        grid.addWidget(self.widths["R"], row, 3, 1, 2)
        grid.addWidget(QLabel("chest wall L"), row + 1, 0)
        grid.addWidget(self.extents["L"], row + 1, 1, 1, 2)
        grid.addWidget(self.widths["L"], row + 1, 3, 1, 2)

    def value(self) -> PleuralThickening:
        def sides(kind: str, site: str) -> frozenset[str]:
            return frozenset(s for s in SIDES if self.boxes[(kind, site, s)].isChecked())

        return PleuralThickening(
            sites={s: sides("site", s) for s in self.site_names if sides("site", s)},
            calcification={s: sides("calc", s) for s in self.site_names if sides("calc", s)},
            extent={s: self.extents[s].currentData() for s in SIDES if self.extents[s].currentData() is not None},
            width={s: self.widths[s].currentData() for s in SIDES if self.widths[s].currentData() is not None},
        )

    def set_value(self, value: PleuralThickening) -> None:
        for (kind, site, side), box in self.boxes.items():
            box.setChecked(side in (value.sides(site) if kind == "site" else value.calcified(site)))
        for side in SIDES:
            self.extents[side].setCurrentIndex(max(0, self.extents[side].findData(value.extent.get(side))))
            self.widths[side].setCurrentIndex(max(0, self.widths[side].findData(value.width.get(side))))

    def first(self) -> QWidget:
        return self.boxes[("site", self.site_names[0], "R")]


class ReadingForm(QWidget):
    """The ILO form. ``submitted`` carries a valid :class:`Reading`; ``read_only`` for others' forms."""

    submitted = Signal(object)

    def __init__(self, parent: QWidget | None = None, *, compact: bool = False) -> None:
        super().__init__(parent)
        self.setObjectName("readingForm")
        self.compact = compact  # narrow (docked): symbols five to a row, the AI suggestion below the form
        self._build()
        self._install_shortcuts()
        self.clear()

    # -- building ------------------------------------------------------------
    def _build(self) -> None:
        outer = QVBoxLayout(self) if self.compact else QHBoxLayout(self)
        form_col = QVBoxLayout()
        outer.addLayout(form_col, 3)
        form_col.addLayout(self._build_parenchyma())
        self._build_pleura(form_col)
        form_col.addWidget(self._build_symbols())
        self._build_footer(form_col)
        outer.addLayout(self._build_side(), 1)
        if self.compact:
            self._narrow()

    def _narrow(self) -> None:
        """Compact form: lists sized to short texts, labels above fields, short pleura headings."""
        for combo in self.findChildren(QComboBox):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(4)
        for layout in self.findChildren(QFormLayout):
            layout.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        for pleura in (self.plaques, self.diffuse):
            for label in pleura.findChildren(QLabel):
                label.setText(label.text().replace("calcified", "calc."))
                label.setWordWrap(True)  # "chest wall in profile" on two lines

    def _build_parenchyma(self) -> QFormLayout:
        """Quality (3.1) and parenchymal abnormalities (3.2)."""
        top = QFormLayout()
        self.quality = _combo("film_quality", [(f"{q} - {t}", q) for q, t in FILM_QUALITY.items()])
        self.quality_reason = named(QLineEdit(placeholderText="defect, when not 1"), "film_quality_reason")
        top.addRow("Quality (Alt+Q)", self.quality)
        top.addRow("Quality reason", self.quality_reason)
        self.profusion = _combo("profusion", [("-", None)] + [(p, p) for p in PROFUSION])
        self.primary = _combo("primary_shape", [("-", None)] + [(s, s) for s in SHAPES])
        self.secondary = _combo("secondary_shape", [("-", None)] + [(s, s) for s in SHAPES])
        shapes = QHBoxLayout()
        shapes.addWidget(self.primary)
        shapes.addWidget(QLabel("/"))
        shapes.addWidget(self.secondary)
        shapes.addStretch(1)
        top.addRow("Profusion (Alt+P)", self.profusion)
        top.addRow("Shape/size (Alt+S)", shapes)
        zones = QGridLayout()
        self.zones: dict[str, QCheckBox] = {}
        for i, zone in enumerate(ZONES):
            box = named(QCheckBox(zone), f"zone_{zone}")
            box.setToolTip(ZONE_NAMES[zone])
            self.zones[zone] = box
            zones.addWidget(box, i % 3, i // 3)
        top.addRow("Zones (Alt+Z)", zones)
        self.large = _combo("large_opacities", [(x, x) for x in LARGE_OPACITIES])
        top.addRow("Large opacities (Alt+L)", self.large)
        return top

    def _build_pleura(self, form_col: QVBoxLayout) -> None:
        """Pleural abnormalities (3.3)."""
        self.plaques = _Pleura("Pleural plaques (Alt+E)", "plaques", PLAQUE_SITES)
        form_col.addWidget(self.plaques)
        cpa = QHBoxLayout()
        self.cpa = {s: named(QCheckBox(s), f"costophrenic_{s}") for s in SIDES}
        cpa.addWidget(QLabel("Costophrenic angle obliteration"))
        for box in self.cpa.values():
            cpa.addWidget(box)
        cpa.addStretch(1)
        form_col.addLayout(cpa)
        self.diffuse = _Pleura("Diffuse pleural thickening", "diffuse", DIFFUSE_SITES)
        form_col.addWidget(self.diffuse)

    def _build_symbols(self) -> QGroupBox:
        """Symbols (3.4), ten (compact: five) to a row, each with its meaning as tool tip and accessible name."""
        symbols = QGroupBox("Symbols (Alt+Y)")
        grid = QGridLayout(symbols)
        grid.setVerticalSpacing(0)
        self.symbols: dict[str, QCheckBox] = {}
        for i, (code, meaning) in enumerate(SYMBOLS.items()):
            box = named(QCheckBox(code), f"symbol_{code}")
            box.setToolTip(meaning)
            box.setAccessibleName(f"{code}: {meaning}")
            self.symbols[code] = box
            per_row = 5 if self.compact else 10
            grid.addWidget(box, i // per_row, i % per_row)
        return symbols

    def _build_footer(self, form_col: QVBoxLayout) -> None:
        """Comments (3.5), validation messages, buttons."""
        self.comments = named(QPlainTextEdit(placeholderText="Comments (Alt+C)"), "comments")
        self.comments.setTabChangesFocus(True)  # Tab leaves the box instead of typing a tab
        self.comments.setFixedHeight(56)
        form_col.addWidget(self.comments)
        self.messages = named(QLabel(wordWrap=True), "validation_messages")
        self.messages.setStyleSheet("color: #b00020;")
        self.messages.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form_col.addWidget(self.messages)
        buttons = QHBoxLayout()
        self.normal_button = named(QPushButton("Normal film (Alt+N)"), "normal_button")
        self.normal_button.clicked.connect(self.fill_normal)
        self.submit_button = named(QPushButton("Submit (Ctrl+Enter)"), "submit_button")
        for button in (self.normal_button, self.submit_button):
            button.setAutoDefault(False)  # Enter in a field never submits: Ctrl+Enter does
        self.submit_button.clicked.connect(self.submit)
        buttons.addWidget(self.normal_button)
        buttons.addStretch(1)
        buttons.addWidget(self.submit_button)
        form_col.addLayout(buttons)

    def _build_side(self) -> QVBoxLayout:
        """The read-only AI suggestion and a slot (``side_panel``) for the dialog's extras."""
        side = QVBoxLayout()
        side.addWidget(QLabel("<b>AI suggestion</b> (not part of your reading)"))
        self.ai_label = named(QLabel(wordWrap=True), "ai_suggestion")
        self.ai_label.setFrameShape(QLabel.Shape.StyledPanel)
        self.ai_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.ai_label.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        side.addWidget(self.ai_label)
        self.side_panel = QVBoxLayout()
        side.addLayout(self.side_panel)
        side.addStretch(1)
        self.set_ai_suggestion(None)
        return side

    def _install_shortcuts(self) -> None:
        targets = {
            "quality": lambda: self.quality.setFocus(),
            "profusion": lambda: self.profusion.setFocus(),
            "shape": lambda: self.primary.setFocus(),
            "zones": lambda: self.zones["RU"].setFocus(),
            "large": lambda: self.large.setFocus(),
            "pleural": lambda: self.plaques.first().setFocus(),
            "symbols": lambda: self.symbols["aa"].setFocus(),
            "comments": lambda: self.comments.setFocus(),
            "normal": self.fill_normal,
            "submit": self.submit,
        }
        self.shortcuts: list[QShortcut] = []
        for action, keys, _what in SHORTCUTS:
            shortcut = QShortcut(QKeySequence(keys), self)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(targets[action])
            self.shortcuts.append(shortcut)

    # -- values -----------------------------------------------------------------
    def reading(self) -> Reading:
        """What the form holds now (not validated)."""
        return Reading(
            film_quality=int(self.quality.currentData()),
            film_quality_reason=self.quality_reason.text().strip(),
            profusion=self.profusion.currentData(),
            primary_shape=self.primary.currentData(),
            secondary_shape=self.secondary.currentData(),
            zones=frozenset(z for z, box in self.zones.items() if box.isChecked()),
            large_opacities=str(self.large.currentData()),
            plaques=self.plaques.value(),
            costophrenic_obliteration=frozenset(s for s, box in self.cpa.items() if box.isChecked()),
            diffuse_thickening=self.diffuse.value(),
            symbols=frozenset(c for c, box in self.symbols.items() if box.isChecked()),
            comments=self.comments.toPlainText().strip(),
        )

    def set_reading(self, reading: Reading) -> None:
        self.quality.setCurrentIndex(max(0, self.quality.findData(reading.film_quality)))
        self.quality_reason.setText(reading.film_quality_reason)
        self.profusion.setCurrentIndex(max(0, self.profusion.findData(reading.profusion)))
        self.primary.setCurrentIndex(max(0, self.primary.findData(reading.primary_shape)))
        self.secondary.setCurrentIndex(max(0, self.secondary.findData(reading.secondary_shape)))
        for zone, box in self.zones.items():
            box.setChecked(zone in reading.zones)
        self.large.setCurrentIndex(max(0, self.large.findData(reading.large_opacities)))
        self.plaques.set_value(reading.plaques)
        for side, box in self.cpa.items():
            box.setChecked(side in reading.costophrenic_obliteration)
        self.diffuse.set_value(reading.diffuse_thickening)
        for code, box in self.symbols.items():
            box.setChecked(code in reading.symbols)
        self.comments.setPlainText(reading.comments)
        self.messages.clear()

    def clear(self) -> None:
        """An empty form: quality 1, no profusion chosen yet (the reader must choose one)."""
        self.set_reading(Reading(film_quality=1))

    def fill_normal(self) -> None:
        """Quality 1, profusion 0/0, nothing else; the reader still submits."""
        self.set_reading(Reading(film_quality=1, profusion="0/0"))
        self.submit_button.setFocus()

    def set_read_only(self, read_only: bool) -> None:
        for widget in self.findChildren(QWidget):
            if widget is not self.ai_label and not isinstance(widget, (QLabel, QGroupBox)):
                widget.setEnabled(not read_only)

    def set_ai_suggestion(self, suggestion: AiSuggestion | None) -> None:
        self.ai_label.setText(suggestion.text() if suggestion is not None else "AI: no result for this study")

    # -- validation ---------------------------------------------------------------
    def field_widget(self, field: str | None) -> QWidget | None:
        """The widget where a validation error's ``field`` is entered."""
        simple = {
            "film_quality": self.quality,
            "film_quality_reason": self.quality_reason,
            "profusion": self.profusion,
            "primary_shape": self.primary,
            "secondary_shape": self.secondary,
            "zones": self.zones["RU"],
            "large_opacities": self.large,
            "costophrenic_obliteration": self.cpa["R"],
            "symbols": self.symbols["aa"],
            "comments": self.comments,
        }
        if field in simple:
            return simple[field]
        head = (field or "").split(".")[0]
        if head == "plaques":
            return self.plaques.first()
        if head == "diffuse_thickening":
            return self.diffuse.first()
        return None

    def validate(self) -> list[str]:
        """Show the validator's messages; returns them (empty when the reading is valid)."""
        problems = self.reading().problems()
        texts = [
            f"{FIELD_LABELS.get((p.field or '').split('.')[0], p.field or 'Reading')}: {p.reason}" for p in problems
        ]
        self.messages.setText("\n".join(texts))
        if problems:
            widget = self.field_widget(problems[0].field)
            if widget is not None:
                widget.setFocus()
        return texts

    def submit(self) -> bool:
        """Emit ``submitted`` with the reading when it is valid; otherwise show why not."""
        if self.validate():
            return False
        self.submitted.emit(self.reading())
        return True
