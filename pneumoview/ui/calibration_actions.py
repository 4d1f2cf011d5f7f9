"""The main window's operating-point, monitoring and heatmap actions, as a mixin of ``MainWindow``.

Kept out of ``main_window.py`` so that file only gains its menu entries and one threshold line.
The mixin uses the window's ``settings``, ``result_store``, ``engine_is_demo``, ``analysis_client``,
``pool``, ``_jobs``, ``_status``, ``_error``, ``busy``, ``current_entry``, ``viewer`` and
``act_attention_overlay``. It owns ``engine_spec`` (a property: a change of model clears the
model-attention maps kept per image and model, and the viewer's attention layer).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pneumoview.errors import PneumoViewError

if TYPE_CHECKING:
    import numpy as np

    from pneumoview.preprocess import ModelInput
    from pneumoview.service.analysis import AnalysisClient, EngineSpec
    from pneumoview.settings import Settings
    from pneumoview.store import ResultStore
    from pneumoview.ui.calibration_dialog import CalibrationDialog
    from pneumoview.ui.monitoring_dialog import MonitoringDialog
    from pneumoview.ui.workers import FunctionJob


def _heatmap_event_work(client: AnalysisClient, spec: EngineSpec, key: str, path: Path) -> dict[str, Any]:
    """Worker thread: the child's ``heatmap`` event alone (the viewer's attention layer needs no pixels)."""
    from pneumoview.ui.analysis_process import error_from_event

    events: list[dict[str, Any]] = []
    final = client.request(spec, {"cmd": "heatmap", "key": key, "path": str(path)}, events.append)
    if final.get("event") == "error":
        raise error_from_event(final)
    return next(e for e in events if e.get("event") == "heatmap")


def _heatmap_work(
    client: AnalysisClient, spec: EngineSpec, key: str, path: Path, known: dict[str, Any] | None = None
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Worker thread: the child's ``heatmap`` event (``known``: one kept from before, no model run), the
    whole grey image and the crop (no torch here)."""
    from pneumoview.imageio import load_grey
    from pneumoview.preprocess import prepare_grey

    heat = known if known is not None else _heatmap_event_work(client, spec, key, path)
    grey = load_grey(path)
    return heat, grey.pixels, prepare_grey(grey).crop


def prepare_with_quality(path: Path) -> ModelInput:
    """Worker thread: the model's input (:func:`pneumoview.preprocess.prepare_grey`) with the
    image-quality gate's verdict (:func:`pneumoview.dicom.quality.gate`, the one the analysis runs)
    appended to its notes (the badge the window shows)."""
    from pneumoview.dicom import quality
    from pneumoview.imageio import load_grey
    from pneumoview.preprocess import prepare_grey
    from pneumoview.settings import load_settings

    model_input = prepare_grey(load_grey(path))
    try:
        thresholds = quality.thresholds_from(load_settings(strict=False).quality)
    except ValueError:
        thresholds = quality.QualityThresholds()
    model_input.notes.append(quality.badge_text(quality.gate(model_input, path, thresholds)))
    return model_input


class CalibrationActions:
    """Menu actions: calibrate, monitoring, heatmap; and the threshold an analysis runs at."""

    settings: Settings
    result_store: ResultStore | None
    analysis_client: AnalysisClient

    # -- the model in use (its change clears the attention maps) ------------------------------------
    @property
    def engine_spec(self) -> EngineSpec | None:
        return getattr(self, "_engine_spec_value", None)

    @engine_spec.setter
    def engine_spec(self, spec: EngineSpec | None) -> None:
        """Another model: the maps of every other model are dropped and the viewer's layer (if it was
        another model's) taken away."""
        for stale in [k for k in self.attention_cache if k[1] != spec]:
            del self.attention_cache[stale]
        viewer = getattr(self, "viewer", None)
        if viewer is not None and getattr(self, "_attention_spec", None) not in (None, spec):
            viewer.set_attention(None)
        self._engine_spec_value = spec

    @property
    def attention_cache(self) -> dict[tuple[str, EngineSpec], dict[str, Any]]:
        """``heatmap`` events by (image key, engine spec): computed once per image and model."""
        cache = getattr(self, "_attention_cache", None)
        if cache is None:
            cache = self._attention_cache = {}
        return cache

    # -- audit -----------------------------------------------------------------------------
    def audit_event(self, kind: str, detail: dict[str, Any]) -> None:
        if self.result_store is not None:
            try:
                self.result_store.audit(kind, actor=self.settings.reviewer_name, detail=detail)
            except PneumoViewError as exc:
                self._status(f"Audit entry not written: {exc.message}")  # type: ignore[attr-defined]

    # -- the threshold of an analysis ------------------------------------------------------------
    def analysis_threshold(self) -> float | None:
        """The threshold of :meth:`analysis_operating_point`; None when the user must choose first."""
        chosen = self.analysis_operating_point()
        return None if chosen is None else chosen[0]

    def analysis_operating_point(self) -> tuple[float, str] | None:
        """(threshold, operating-point id) of the bundle in use; None when the user must choose first.

        The demo model (random weights) has no operating point: it runs at the settings' threshold
        (id ""). The id goes into every result's provenance.
        """
        spec = self.engine_spec
        if spec is None or spec.demo:
            return float(self.settings.threshold), ""
        from pneumoview.operating_points import OperatingPointStore
        from pneumoview.ui.calibration_dialog import bundle_identity, threshold_for_bundle

        try:
            threshold = threshold_for_bundle(
                self,
                spec.bundle,
                default=float(self.settings.threshold),
                who=self.settings.reviewer_name,  # type: ignore[arg-type]
                audit=self.audit_event,
                open_calibration=lambda fingerprint, model_id: self.open_calibration_dialog(fingerprint, model_id),
            )
            if threshold is None:
                return None
            point = OperatingPointStore().threshold_for(bundle_identity(spec.bundle)[0]).point
        except PneumoViewError as exc:
            self._error("Operating point", exc.message)  # type: ignore[attr-defined]
            return None
        return threshold, point.id if point is not None else ""

    # -- dialogs -------------------------------------------------------------------------------
    def _current_bundle(self) -> tuple[str, str]:
        spec = self.engine_spec
        if spec is not None and not spec.demo:
            from pneumoview.ui.calibration_dialog import bundle_identity

            return bundle_identity(spec.bundle)
        loaded = self.analysis_client.loaded or {}
        return str(loaded.get("fingerprint", "")), str(loaded.get("model_id", ""))

    def open_calibration_dialog(
        self, fingerprint: str | None = None, model_id: str | None = None
    ) -> CalibrationDialog | None:
        from pneumoview.ui.calibration_dialog import CalibrationDialog, calibrate_command_for

        if fingerprint is None:
            try:
                fingerprint, model_id = self._current_bundle()
            except PneumoViewError as exc:
                self._error("Calibrate", exc.message)  # type: ignore[attr-defined]
                return None
        spec = self.engine_spec or self.spec_for_settings()  # type: ignore[attr-defined]
        dialog = CalibrationDialog(
            self,
            bundle_fingerprint=fingerprint or "",
            bundle_id=model_id or "",  # type: ignore[arg-type]
            who=self.settings.reviewer_name,
            calibrate_command=None if spec is None else calibrate_command_for(spec),
            database=None if self.result_store is None else self.result_store.path,
            model_demo=spec is None or spec.demo,
            on_saved=lambda p: self.audit_event(
                "operating-point-changed",
                {
                    "operating_point_id": p.id,
                    "bundle_fingerprint": p.bundle_fingerprint,
                    "bundle_id": p.bundle_id,
                    "threshold": p.threshold,
                    "kind": p.kind,
                },
            ),
        )
        dialog.show()
        self._calibration_dialog = dialog
        return dialog

    def open_monitoring_dialog(self) -> MonitoringDialog | None:
        from pneumoview.monitoring import report_for
        from pneumoview.ui.monitoring_dialog import MonitoringDialog

        if self.result_store is None:
            self._error("Monitoring", "The results database is not open.")  # type: ignore[attr-defined]
            return None
        try:
            report = report_for(self.result_store.path, self.settings)
        except PneumoViewError as exc:
            self._error("Monitoring", exc.message)  # type: ignore[attr-defined]
            return None
        dialog = MonitoringDialog(report, self)  # type: ignore[arg-type]
        dialog.show()
        self._monitoring_dialog = dialog
        return dialog

    def show_heatmap(self) -> FunctionJob | None:
        """Ask the analysis worker for the current image's attention map; show it when it comes."""
        from pneumoview.ui.workers import FunctionJob

        entry = self.current_entry()  # type: ignore[attr-defined]
        if entry is None or not entry.diagnosable:
            self._status("Select an image the model can analyse first.")  # type: ignore[attr-defined]
            return None
        if self.busy():  # type: ignore[attr-defined]
            self._status("Busy: the heatmap waits for the current task.")  # type: ignore[attr-defined]
            return None
        spec = self.engine_spec or self.spec_for_settings()  # type: ignore[attr-defined]
        if spec is None:
            self._status("No model: set one up or use the demo model first.")  # type: ignore[attr-defined]
            return None
        known = self.attention_cache.get((entry.key, spec))
        job = FunctionJob(_heatmap_work, self.analysis_client, spec, entry.key, Path(entry.path), known)
        job.signals.finished.connect(lambda outcome, k=entry.key, s=spec: self._keep_attention(k, s, outcome[0]))
        job.signals.finished.connect(self._on_heatmap)
        job.signals.failed.connect(lambda message: self._error("Heatmap", message))  # type: ignore[attr-defined]
        self._jobs = [j for j in self._jobs if not j.done.is_set()] + [job]  # type: ignore[has-type]
        self._status("Computing the model-attention heatmap...")  # type: ignore[attr-defined]
        self.pool.start(job)  # type: ignore[attr-defined]
        return job

    def _on_heatmap(self, outcome: tuple[dict[str, Any], np.ndarray, np.ndarray]) -> None:
        from pneumoview.ui.heatmap_dialog import HeatmapDialog, overlays

        heat, grey, crop = outcome
        crop_rgb, full_rgb = overlays(heat, grey, crop)
        dialog = HeatmapDialog(crop_rgb, full_rgb, label=str(heat["label"]), demo=bool(heat.get("demo")), parent=self)  # type: ignore[arg-type]
        dialog.show()
        self._heatmap_dialog = dialog
        self._status("Heatmap ready (model attention, not a lesion finding).")  # type: ignore[attr-defined]

    # -- the model-attention layer in the viewer ----------------------------------------------------
    def toggle_attention_overlay(self, checked: bool) -> FunctionJob | None:
        """Show the current image's model-attention map in the viewer (computed on demand in the analysis
        worker, kept per image and model), or take it away."""
        viewer: Any = self.viewer  # type: ignore[attr-defined]
        if not getattr(self, "_attention_connected", False):
            viewer.attentionCleared.connect(lambda: self._set_attention_checked(False))
            self._attention_connected = True
        if not checked:
            viewer.set_attention(None)
            return None
        entry = self.current_entry()  # type: ignore[attr-defined]
        spec = self.engine_spec or self.spec_for_settings()  # type: ignore[attr-defined]
        problem = (
            "Select an image the model can analyse first."
            if entry is None or not entry.diagnosable or viewer.view is None or viewer.view.path != Path(entry.path)
            else "No model: set one up or use the demo model first."
            if spec is None
            else ""
        )
        if problem:
            self._status(problem)  # type: ignore[attr-defined]
            self._set_attention_checked(False)
            return None
        cached = self.attention_cache.get((entry.key, spec))
        if cached is not None:
            self._apply_attention(entry.key, spec, cached)
            return None
        if self.busy():  # type: ignore[attr-defined]
            self._status("Busy: the attention map waits for the current task.")  # type: ignore[attr-defined]
            self._set_attention_checked(False)
            return None
        from pneumoview.ui.workers import FunctionJob

        job = FunctionJob(_heatmap_event_work, self.analysis_client, spec, entry.key, Path(entry.path))
        job.signals.finished.connect(lambda event, k=entry.key, s=spec: self._on_attention(k, s, event))
        job.signals.failed.connect(lambda message: self._attention_failed(message))
        self._jobs = [j for j in self._jobs if not j.done.is_set()] + [job]  # type: ignore[has-type]
        self._status("Computing the model-attention map...")  # type: ignore[attr-defined]
        self.pool.start(job)  # type: ignore[attr-defined]
        return job

    def _set_attention_checked(self, checked: bool) -> None:
        action = getattr(self, "act_attention_overlay", None)
        if action is not None and action.isChecked() != checked:
            action.setChecked(checked)

    def _attention_failed(self, message: str) -> None:
        self._set_attention_checked(False)
        self._error("Model attention", message)  # type: ignore[attr-defined]

    def _keep_attention(self, key: str, spec: EngineSpec, event: dict[str, Any]) -> None:
        """Keep a computed map for (image, model), unless the model changed meanwhile."""
        if self.engine_spec is None or spec == self.engine_spec:
            self.attention_cache[(key, spec)] = event

    def _on_attention(self, key: str, spec: EngineSpec, event: dict[str, Any]) -> None:
        if self.engine_spec is not None and spec != self.engine_spec:  # the model changed meanwhile
            return
        self._keep_attention(key, spec, event)
        entry = self.current_entry()  # type: ignore[attr-defined]
        action = getattr(self, "act_attention_overlay", None)
        if entry is not None and entry.key == key and (action is None or action.isChecked()):
            self._apply_attention(key, spec, event)

    def _apply_attention(self, key: str, spec: EngineSpec, event: dict[str, Any]) -> None:
        from pneumoview.inference.attention_maps import decode_map

        crop_map = decode_map(str(event["crop_map"]), int(event["size"]))
        box = tuple(int(v) for v in event["box"])
        self.viewer.set_attention(crop_map, box, fallback=bool(event.get("fallback")))  # type: ignore[attr-defined]
        self._attention_spec = spec
        demo = " [DEMO - not a diagnosis]" if event.get("demo") else ""
        self._status(f"Model attention shown (not a lesion finding){demo}.")  # type: ignore[attr-defined]
