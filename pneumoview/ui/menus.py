"""The main window's menus and shortcuts as one data table (the only place a window key string lives).

:data:`MENU_ACTIONS` rows are ``(menu, attribute on the window or "", text, slot, shortcut)``. Text
``"-"`` is a separator, ``"submenu"`` a sub-menu (its title in the slot column), ``"dock"`` the
show/hide toggle of the dock named in the slot column. Slots are method paths on the window
(``"viewer.fit"``); the slots in :data:`CHECKABLE` make checkable actions, called with the new state.
The Help > Keyboard Shortcuts dialog (:mod:`pneumoview.ui.help`) is generated from this table, the
Reading menu's table and the reading form's table.

Single keys (B, I, F, 1, R) act on the viewer; inside the docked reading form printable keys go to
the focused field first (see :class:`pneumoview.ui.reading_dock.ReadingDock`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMenu, QWidget

Shortcut = str | QKeySequence.StandardKey | None


@dataclass(frozen=True)
class MenuEntry:
    """One entry of a controller's menu table (the Reading menu, the compare entries)."""

    action: str  # method name on the controller
    text: str
    shortcut: str = ""


def add_entries(menu: QMenu, window: QWidget, controller: object, entries: Sequence[MenuEntry]) -> list[QAction]:
    """Add ``entries`` to ``menu`` as actions owned by ``window``, each calling ``controller.<action>()``."""
    actions: list[QAction] = []
    for entry in entries:
        act = QAction(entry.text, window)
        act.setObjectName(entry.action)
        if entry.shortcut:
            act.setShortcut(QKeySequence(entry.shortcut))
        act.triggered.connect(lambda _checked=False, name=entry.action: getattr(controller, name)())
        menu.addAction(act)
        actions.append(act)
    return actions


MENU_ACTIONS: tuple[tuple[str, str, str, str, Shortcut], ...] = (
    ("&File", "act_open_folder", "Open &Folder...", "choose_folder", QKeySequence.StandardKey.Open),
    ("&File", "act_open_files", "Open &Files...", "choose_files", "Ctrl+Shift+O"),
    ("&File", "recent_menu", "submenu", "&Recent Folders", None),
    ("&File", "", "-", "", None),
    ("&File", "act_export_all", "&Export All to CSV...", "export_all_dialog", "Ctrl+E"),
    ("&File", "act_export_selected", "Export &Selected to CSV...", "export_selected_dialog", None),
    ("&File", "", "-", "", None),
    ("&File", "act_settings", "Se&ttings...", "open_settings_dialog", QKeySequence.StandardKey.Preferences),
    ("&File", "", "-", "", None),
    ("&File", "", "&Quit", "close", QKeySequence.StandardKey.Quit),
    ("&View", "act_next_unread", "Next &Unread Study", "next_unread", "Ctrl+Right"),
    ("&View", "act_prev_unread", "Previous U&nread Study", "previous_unread", "Ctrl+Left"),
    ("&View", "act_next_study", "&Next Study", "next_study", "Ctrl+Down"),
    ("&View", "act_prev_study", "&Previous Study", "previous_study", "Ctrl+Up"),
    ("&View", "", "-", "", None),
    ("&View", "act_overlay", "Lung &Box Overlay", "viewer.set_overlay_visible", "B"),
    ("&View", "act_invert", "&Invert What Is Shown", "viewer.set_invert", "I"),
    ("&View", "act_fit", "&Fit", "viewer.fit", "F"),
    ("&View", "act_one", "&1:1", "viewer.one_to_one", "1"),
    ("&View", "act_reset", "&Reset View", "_reset_view", "R"),
    ("&View", "", "-", "", None),
    ("&View", "", "dock", "browser_dock", None),
    ("&View", "", "dock", "tags_dock", None),
    ("&View", "", "dock", "result_dock", None),
    ("&View", "", "dock", "reading_form_dock", None),
    ("&View", "", "dock", "problems_dock", None),
    ("Revie&w", "act_agree", "&Agree with the AI", "review.choose_agree", "Ctrl+1"),
    ("Revie&w", "act_disagree", "&Disagree with the AI", "review.choose_disagree", "Ctrl+2"),
    ("Revie&w", "act_uncertain", "&Uncertain", "review.choose_uncertain", "Ctrl+3"),
    ("Revie&w", "act_save_decision", "&Save Decision", "review.save", "Ctrl+S"),
    ("Revie&w", "", "-", "", None),
    ("Revie&w", "act_reading_form", "ILO Reading &Form (docked)", "focus_reading_form", "F2"),
    ("&Analysis", "act_analyse_selected", "Analyse &Selected", "analyse_selected", "Ctrl+R"),
    ("&Analysis", "act_analyse_all", "Analyse &All", "analyse_all", "Ctrl+Shift+R"),
    ("&Analysis", "act_reanalyse_all", "&Re-analyse All...", "reanalyse_all", None),
    ("&Analysis", "act_cancel", "&Cancel", "cancel_task", "Esc"),
    ("&Analysis", "", "-", "", None),
    ("&Analysis", "act_heatmap", "Model Attention &Heatmap (not a finding)", "show_heatmap", "Ctrl+H"),
    ("&Analysis", "act_attention_overlay", "Attention &Overlay (not a finding)", "toggle_attention_overlay", "Shift+H"),
    ("&Analysis", "act_monitoring", "&Monitoring...", "open_monitoring_dialog", None),
    ("&Model", "act_setup", "Model &Setup...", "open_setup_dialog", None),
    ("&Model", "act_models", "Model &Manager...", "open_model_manager", None),
    ("&Model", "act_rollback", "Roll &Back to the Previous Model", "rollback_model", None),
    ("&Model", "act_demo", "Use the &Demo Model (not a diagnosis)", "use_demo_model", None),
    ("&Model", "act_retrain", "&Retrain on my data...", "open_retrain_wizard", None),
    ("&Model", "act_calibrate", "&Calibrate Operating Point...", "open_calibration_dialog", None),
)
CHECKABLE = frozenset({"viewer.set_overlay_visible", "viewer.set_invert", "toggle_attention_overlay"})

#: The Help menu, added after every other menu (Reading and PACS install theirs in between).
HELP_ACTIONS: tuple[tuple[str, str, str, str, Shortcut], ...] = (
    ("&Help", "act_shortcuts", "&Keyboard Shortcuts", "show_shortcuts", QKeySequence.StandardKey.HelpContents),
    ("&Help", "act_about", "&About PneumoView", "show_about", None),
)


def key_text(shortcut: Shortcut) -> str:
    """A shortcut as the user reads it on this platform ("Ctrl+O" for StandardKey.Open)."""
    if shortcut is None or shortcut == "":
        return ""
    if isinstance(shortcut, QKeySequence.StandardKey):
        bindings = QKeySequence.keyBindings(shortcut)
        return ", ".join(b.toString(QKeySequence.SequenceFormat.NativeText) for b in bindings)
    return QKeySequence(shortcut).toString(QKeySequence.SequenceFormat.NativeText)


def plain_text(text: str) -> str:
    """A menu text without its mnemonic ampersands ("&Open" -> "Open")."""
    return text.replace("&&", "\0").replace("&", "").replace("\0", "&")
