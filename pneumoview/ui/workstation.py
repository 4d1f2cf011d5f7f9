"""The reading-workstation parts of the main window, as a mixin of ``MainWindow``: the flat worklist,
the docked ILO reading form with save-and-next, next / previous unread, the final-determination rule
from the settings, Help (About, Keyboard Shortcuts) and the window title's model and DEMO state.

Rows, filters and "unread" come from :mod:`pneumoview.worklist`; readings, blinding and the final
determination from :class:`pneumoview.reading.repository.ReadingRepository`. The mixin uses the
window's ``settings``, ``session``, ``result_store``, ``reading_menu``
(:class:`~pneumoview.ui.reading_dialogs.ReadingMenuController`), ``worklist``, ``reading_form_dock``,
``reading_dock``, ``engine_is_demo``, ``_demo_fallback``, ``current_entry``, ``select_key``,
``_current_key``, ``_status`` and ``_error``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pneumoview.errors import PneumoViewError
from pneumoview.reading.rules import FinalRule
from pneumoview.worklist import build_rows, step_unread

if TYPE_CHECKING:
    from pneumoview.reading.repository import ReadingRepository
    from pneumoview.reading.rules import SubmittedReading
    from pneumoview.ui.help import ModelSummary

log = logging.getLogger(__name__)


class WorkstationActions:
    """Worklist, docked reading, Help and title (see the module docstring)."""

    settings: Any
    session: Any
    reading_menu: Any
    worklist: Any
    reading_form_dock: Any
    reading_dock: Any

    # -- the final-determination rule (a setting) --------------------------------------------
    def final_rule(self) -> FinalRule:
        """The settings' rule (``final_rule``: :meth:`FinalRule.to_json_dict` form; empty: the default)."""
        try:
            return FinalRule.from_json_dict(self.settings.final_rule or {})
        except PneumoViewError as exc:
            log.warning("final_rule setting ignored: %s", exc.message)
            return FinalRule()

    def _reading_repository(self) -> ReadingRepository | None:
        store = getattr(self, "result_store", None)
        if store is None:
            return None
        from pneumoview.reading.repository import ReadingRepository

        return ReadingRepository(store, self.final_rule())

    # -- worklist ------------------------------------------------------------------------------
    def refresh_worklist(self) -> None:
        """Rebuild the worklist rows from the session and the stored readings."""
        repo = self._reading_repository()
        readings = repo.by_study() if repo is not None else {}
        rows = build_rows(self.session.entries.values(), readings, self.final_rule())
        self.worklist.set_rows(rows, self.reading_menu.reader or None)
        self.worklist.select_key(getattr(self, "_current_key", None))

    def next_unread(self) -> None:
        self._step_unread(+1)

    def previous_unread(self) -> None:
        self._step_unread(-1)

    def _step_unread(self, step: int) -> None:
        """Show the first image of the next / previous study the signed-in reader still has to read."""
        timer = getattr(self, "_worklist_timer", None)
        if timer is not None and timer.isActive():  # rows not rebuilt yet since the last change
            timer.stop()
            self.refresh_worklist()
        key = step_unread(self.worklist.model.rows, getattr(self, "_current_key", None), step, self.reading_menu.reader)
        if key is None:
            self._status("No unread study left.")  # type: ignore[attr-defined]
            return
        self.select_key(key)  # type: ignore[attr-defined]

    # -- the docked reading form ------------------------------------------------------------------
    def refresh_reading_dock(self) -> None:
        """The docked form for the study on screen and the signed-in reader."""
        self.reading_menu.rule = self.final_rule()
        entry = self.current_entry()  # type: ignore[attr-defined]
        study = str(entry.record.study_uid or "") if entry is not None else ""
        self.reading_dock.show_study(self._reading_repository(), study or None, self.reading_menu.reader)

    def focus_reading_form(self) -> None:
        """Review > ILO Reading Form (F2): raise the docked form and put the focus on film quality."""
        if not self.reading_menu.reader:
            if not self.sign_in_reader():
                return
            self.activateWindow()  # type: ignore[attr-defined]  # back from the sign-in dialog
        self.reading_form_dock.show()
        self.reading_form_dock.raise_()
        self.reading_dock.focus_form()

    def sign_in_reader(self) -> bool:
        signed_in = self.reading_menu.sign_in()
        self.refresh_reading_dock()
        self.refresh_worklist()
        return signed_in

    def _on_reading_saved(self, submitted: SubmittedReading) -> None:
        """Save-and-next: the reading is stored; show the next unread study (or say there is none)."""
        self._status(f"Reading saved for {submitted.reader}.")  # type: ignore[attr-defined]
        self.refresh_worklist()
        key = step_unread(self.worklist.model.rows, getattr(self, "_current_key", None), +1, submitted.reader)
        if key is None:
            self._status(f"Reading saved for {submitted.reader}; no unread study left.")  # type: ignore[attr-defined]
            self.refresh_reading_dock()
            return
        self.select_key(key)  # type: ignore[attr-defined]
        self.reading_dock.focus_form()

    # -- Help and the title ------------------------------------------------------------------------
    def active_model_summary(self) -> ModelSummary:
        from pneumoview.active_model import resolve_active_model
        from pneumoview.ui.help import ModelSummary, summarise_model

        if getattr(self, "_demo_fallback", False):
            return ModelSummary("demo model", "", True)
        return summarise_model(resolve_active_model(self.settings))

    def update_title(self) -> None:
        """``PneumoView - <active model>`` and ``DEMO`` while the demo model is active."""
        self.setWindowTitle(self.active_model_summary().title())  # type: ignore[attr-defined]

    def show_about(self) -> None:
        from pneumoview.ui.help import AboutDialog

        AboutDialog(self.active_model_summary(), self).exec()  # type: ignore[arg-type]

    def show_shortcuts(self) -> None:
        from pneumoview.ui.help import ShortcutsDialog

        ShortcutsDialog(self).exec()  # type: ignore[arg-type]


__all__ = ["WorkstationActions"]
