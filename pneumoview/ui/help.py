"""Help > Keyboard Shortcuts and Help > About, and the window title's model part.

The shortcut list is generated from the data tables that create the shortcuts
(:data:`pneumoview.ui.menus.MENU_ACTIONS`, :data:`pneumoview.ui.reading_dialogs.READING_MENU`,
:data:`pneumoview.ui.reading_form.SHORTCUTS`): no key string is written twice. Licences are read
from the installed distributions' metadata (``License-Expression``, ``License``, then the
``License ::`` trove classifiers), with a short fallback table for a frozen build without metadata.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from importlib import metadata

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from pneumoview import __version__
from pneumoview.labels import DEMO_MARK
from pneumoview.ui.compare_view import COMPARE_MENU
from pneumoview.ui.menus import HELP_ACTIONS, MENU_ACTIONS, key_text, plain_text
from pneumoview.ui.reading_dialogs import READING_MENU
from pneumoview.ui.reading_form import SHORTCUTS as FORM_SHORTCUTS

NOT_A_MEDICAL_DEVICE = "Research software \u2014 not a medical device"

#: Bundled components and the licence to show when the installed metadata does not say.
COMPONENTS: tuple[tuple[str, str], ...] = (
    ("PySide6", "LGPLv3"),
    ("pydicom", "MIT"),
    ("torch", "BSD-3-Clause"),
    ("open_clip_torch", "MIT"),
    ("transformers", "Apache-2.0"),
    ("numpy", "BSD-3-Clause"),
    ("Pillow", "HPND"),
    ("matplotlib", "PSF-like (matplotlib licence)"),
    ("pynetdicom", "MIT"),
    ("highdicom", "MIT"),
)
#: Other distribution names a component is installed under.
_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {"PySide6": ("PySide6-Essentials", "PySide6-Addons")}


def _licence_from_metadata(meta: metadata.PackageMetadata) -> str:
    expression = (meta.get("License-Expression") or "").strip()
    if expression:
        return expression
    text = (meta.get("License") or "").strip()
    if text and "\n" not in text and len(text) <= 60:
        return text
    classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    return "; ".join(c for c in classifiers if c and c != "OSI Approved")


def licence_rows() -> list[tuple[str, str, str]]:
    """(component, installed version or "not installed", licence) for each of :data:`COMPONENTS`."""
    rows = []
    for name, fallback in COMPONENTS:
        meta = None
        for distribution in (name, *_DISTRIBUTIONS.get(name, ())):
            try:
                meta = metadata.metadata(distribution)
                break
            except metadata.PackageNotFoundError:
                continue
        if meta is None:
            rows.append((name, "not installed", fallback))
        else:
            rows.append((name, meta.get("Version") or "", _licence_from_metadata(meta) or fallback))
    return rows


@dataclass(frozen=True)
class ModelSummary:
    """The active model as the title bar and About show it."""

    name: str
    fingerprint: str  # registry content digest; "" when unknown
    demo: bool

    def title(self) -> str:
        """``"PneumoView - <model>"``, with ``DEMO`` when the demo model (or a demo-base bundle) is active."""
        if self.demo:
            return f"PneumoView - {self.name} - DEMO"
        return f"PneumoView - {self.name}" if self.name else "PneumoView - no model"


def summarise_model(model: object | None) -> ModelSummary:
    """A :class:`ModelSummary` of a :class:`pneumoview.active_model.ActiveModel` (None: no model);
    the fingerprint is the registry entry's content SHA-256 when the model is registered."""
    if model is None:
        return ModelSummary("", "", False)
    demo = bool(getattr(model, "demo", False))
    registry_id = getattr(model, "registry_id", None)
    name = str(getattr(model, "name", "") or registry_id or ("demo model" if demo else ""))
    fingerprint = ""
    if registry_id:
        from pneumoview.errors import PneumoViewError
        from pneumoview.registry import ModelRegistry

        try:
            fingerprint = ModelRegistry().get(registry_id).content_sha256
        except PneumoViewError:
            fingerprint = ""
    return ModelSummary(name, fingerprint, demo)


def shortcut_rows() -> list[tuple[str, str, str]]:
    """(where, keys, what) for every shortcut, from the tables that create them."""
    rows: list[tuple[str, str, str]] = []
    for menu, _attr, text, _slot, shortcut in MENU_ACTIONS + HELP_ACTIONS:
        if shortcut is not None and text not in ("-", "submenu", "dock") and key_text(shortcut):
            rows.append((plain_text(menu), key_text(shortcut), plain_text(text)))
    for entry in READING_MENU:
        if entry.shortcut:
            rows.append(("Reading", key_text(entry.shortcut), plain_text(entry.text)))
    for entry in COMPARE_MENU:
        if entry.shortcut:
            rows.append(("View", key_text(entry.shortcut), plain_text(entry.text)))
    for _action, keys, what in FORM_SHORTCUTS:
        rows.append(("ILO reading form", key_text(keys), what))
    submit = next(keys for action, keys, _what in FORM_SHORTCUTS if action == "submit")
    rows.append(("ILO reading form (docked)", key_text(submit), "save the reading and open the next unread study"))
    return rows


def _table(headers: list[str], rows: list[tuple[str, ...]], name: str) -> QTableWidget:
    table = QTableWidget(len(rows), len(headers))
    table.setObjectName(name)
    table.setHorizontalHeaderLabels(headers)
    table.verticalHeader().hide()
    table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            table.setItem(r, c, QTableWidgetItem(value))
    table.horizontalHeader().setSectionResizeMode(len(headers) - 1, QHeaderView.ResizeMode.Stretch)
    table.resizeColumnsToContents()
    return table


class ShortcutsDialog(QDialog):
    """Every keyboard shortcut, generated from the data tables."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        self.resize(640, 560)
        layout = QVBoxLayout(self)
        self.table = _table(["Where", "Keys", "What"], shortcut_rows(), "shortcut_table")
        layout.addWidget(self.table)
        layout.addWidget(QLabel("Tab / Shift+Tab move between fields, also out of text boxes."))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)


class AboutDialog(QDialog):
    """Version, active model and its fingerprint (or DEMO), the safety sentence, licences."""

    def __init__(self, model: ModelSummary, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("About PneumoView")
        self.resize(600, 520)
        layout = QVBoxLayout(self)
        if model.demo:
            model_text = f"Active model: <b>{html.escape(model.name)}</b> \u2014 <b>DEMO</b> ({DEMO_MARK})"
        elif model.name:
            fingerprint = html.escape(model.fingerprint) if model.fingerprint else "not registered"
            model_text = (
                f"Active model: <b>{html.escape(model.name)}</b><br>Bundle fingerprint: <code>{fingerprint}</code>"
            )
        else:
            model_text = "Active model: none installed"
        self.text = QLabel(
            f"<h2>PneumoView {html.escape(__version__)}</h2>"
            f"<p><b>{NOT_A_MEDICAL_DEVICE}.</b> Its outputs support, and never replace, a qualified reader.</p>"
            f"<p>{model_text}</p><p>Bundled components:</p>"
        )
        self.text.setObjectName("about_text")
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.text)
        self.licences = _table(["Component", "Version", "Licence"], licence_rows(), "licence_table")
        layout.addWidget(self.licences)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)


__all__ = [
    "COMPONENTS",
    "NOT_A_MEDICAL_DEVICE",
    "AboutDialog",
    "ModelSummary",
    "ShortcutsDialog",
    "licence_rows",
    "shortcut_rows",
    "summarise_model",
]
