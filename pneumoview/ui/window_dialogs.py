"""The main window's dialogs as a mixin of ``MainWindow``: CSV export, settings, model setup, model
manager, rollback, the retraining wizard, and what follows a model activation.

The mixin uses the window's ``settings``, ``settings_path``, ``session``, ``result_store``,
``analysis_client``, ``engine_spec``, ``engine_is_demo``, ``_demo_fallback``, ``_apply_settings``,
``_save_settings``, ``_run_pending_analysis``, ``audit_event``, ``selected_keys``, ``_status`` and ``_error``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt

from pneumoview.errors import PneumoViewError

if TYPE_CHECKING:
    from pneumoview.report import ExportOptions, ExportSummary


class WindowDialogs:
    """Export, settings and model dialogs of the main window (see the module docstring)."""

    def export_dialog(self, *, selected: bool) -> None:
        from pneumoview.ui.export_dialog import ExportDialog

        dialog = ExportDialog(
            self,
            self.settings,
            selected_count=len(self.selected_keys()) if selected else None,
            settings_path=self.settings_path,
        )
        if dialog.exec():
            self.export(dialog.target_path(), selected=selected, options=dialog.options())

    def export(self, path: Path, *, selected: bool, options: ExportOptions) -> ExportSummary | None:
        """Write the CSV report (:func:`pneumoview.report.export_csv`); returns its summary."""
        from pneumoview.report import export_csv

        keys = self.selected_keys() if selected else None
        try:
            rows = self.session.report_rows(keys)
            summary = export_csv(path, rows, options)
        except (PneumoViewError, RuntimeError) as exc:
            self._error("Export failed", getattr(exc, "message", str(exc)))
            return None
        if self.result_store is not None:
            self.result_store.audit(
                "export",
                actor=self.settings.reviewer_name,
                detail={"path": str(path), "rows": summary.rows, "pseudonymised": bool(options.pseudonymise)},
            )
        self.settings.export.last_directory = str(Path(path).parent)
        self._save_settings()
        self._status(f"Exported {summary.rows} row(s) to {path}")
        return summary

    def open_settings_dialog(self) -> None:
        from pneumoview.ui.settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.settings, self)
        if dialog.exec():
            old = (
                self.settings.clip_path,
                self.settings.llama_path,
                self.settings.active_bundle,
                self.settings.device,
                self.settings.precision,
            )
            self.settings = dialog.result_settings()
            self._save_settings()
            new = (
                self.settings.clip_path,
                self.settings.llama_path,
                self.settings.active_bundle,
                self.settings.device,
                self.settings.precision,
            )
            if old != new and not self.engine_is_demo:
                self.engine_spec = None  # rebuilt from the new settings at the next analysis
            self._apply_settings()

    def open_setup_dialog(self) -> None:
        from pneumoview.ui.setup_dialog import ModelSetupDialog

        dialog = ModelSetupDialog(self.settings, self, client=self.analysis_client)
        dialog.demoRequested.connect(self.use_demo_model)
        dialog.modelActivated.connect(self._on_model_activated)
        if dialog.exec():
            self.settings = dialog.result_settings()
            self._save_settings()
            self._leave_demo()
            self._apply_settings()
            self.audit_event("model-activated", {"bundle": self.settings.active_bundle or "", "source": "model setup"})
            self._run_pending_analysis()

    def _leave_demo(self) -> None:
        """The user set up a real model: stop using the demo choice (here and after a restart)."""
        from pneumoview.registry import ModelRegistry

        self._demo_fallback = False
        try:
            ModelRegistry().leave_demo()
        except PneumoViewError as exc:
            self._error("The model choice cannot be saved", exc.message)

    def open_model_manager(self) -> None:
        """Model > Model Manager: the registry's bundles; activate / roll back / remove."""
        from pneumoview.ui.model_manager import ModelManagerDialog

        dialog = ModelManagerDialog(self)
        dialog.modelActivated.connect(self._on_model_activated)
        dialog.exec()

    def rollback_model(self) -> None:
        """Re-activate the previously active bundle (``pneumoview models rollback``)."""
        from pneumoview.registry import ModelRegistry

        try:
            entry = ModelRegistry().rollback()
        except PneumoViewError as exc:
            self._error("Cannot roll back", exc.message)
            return
        self._on_model_activated(entry.id)

    def open_retrain_wizard(self) -> None:
        try:
            from pneumoview.ui import wizard
        except ImportError as exc:
            self._error("Retraining is not available", f"The retraining wizard is not installed ({exc}).")
            return
        dialog = wizard.RetrainWizard(self, settings=self.settings)
        if hasattr(dialog, "modelActivated"):
            dialog.modelActivated.connect(self._on_model_activated)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.show()
        self._wizard = dialog

    def _on_model_activated(self, registry_id: str) -> None:
        """A bundle became the registry's active model (wizard, model manager, setup, rollback): the
        next analysis resolves it afresh; an explicit bundle folder in the settings would hide it."""
        self._demo_fallback = False
        if self.settings.active_bundle:
            self.settings.active_bundle = None
            self._save_settings()
        self._apply_settings()
        self.audit_event("model-activated", {"registry_id": registry_id})
        self._status(f"Model {registry_id} is now active; the next analysis uses it.")


__all__ = ["WindowDialogs"]
