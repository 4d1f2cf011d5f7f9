"""The main window's analysis orchestration, as a mixin of ``MainWindow``: the active model resolved
afresh, the "no model" prompt, Analyse Selected / All / Re-analyse All, results applied to the session.

The analysis itself runs in the worker process behind :class:`pneumoview.ui.analysis_process.AnalysisClient`
(the window never imports torch). The mixin uses the window's ``settings``, ``session``, ``diagnosis``,
``problems``, ``analysis_client``, ``engine_spec``, ``engine_is_demo``, ``_demo_fallback``,
``_pending_analysis``, ``_model_missing``, task helpers (``_claim_task``, ``_start_task``, ``_task_done``,
``_on_progress``), ``_status``, ``_error``, ``_problems_changed``, ``selected_keys`` and
``analysis_operating_point`` (:class:`pneumoview.ui.calibration_actions.CalibrationActions`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from pneumoview.errors import PneumoViewError
from pneumoview.results import ANALYSED, ImageResult
from pneumoview.service.analysis import WorkItem
from pneumoview.ui.analysis_process import EngineSpec
from pneumoview.ui.workers import AnalysisJob

if TYPE_CHECKING:
    from pneumoview.settings import Settings


def model_configured(settings: Settings) -> bool:
    """True when a model can run now (read afresh): the demo choice, or a bundle (explicit, or the
    registry's active one) with the base weights it needs (:mod:`pneumoview.active_model`)."""
    from pneumoview.active_model import resolve_active_model

    model = resolve_active_model(settings)
    return model is not None and model.ready


class AnalysisActions:
    """Analysis menu and model-choice actions of the main window (see the module docstring)."""

    analysisFinished: Any  # Signal(int), declared on the window

    def use_demo_model(self) -> None:
        """Switch to the built-in demo model (random weights; every output marked DEMO), remembered
        across restarts in the model registry; runs the analysis the "no model" prompt was asked for."""
        from pneumoview.registry import ModelRegistry

        try:
            ModelRegistry().use_demo()
            self._demo_fallback = False
        except PneumoViewError as exc:
            self._demo_fallback = True  # used in this window; not remembered
            self._error("The demo choice cannot be saved", exc.message)
        self.engine_spec = EngineSpec("demo")
        self.engine_is_demo = True
        self.diagnosis.set_model_installed(True)
        self._status("Demo model selected: its results are marked 'DEMO - not a diagnosis'.")
        self.update_title()
        self._run_pending_analysis()

    def _run_pending_analysis(self) -> None:
        keys, self._pending_analysis = self._pending_analysis, []
        if keys and (self._demo_fallback or model_configured(self.settings)):
            self.analyse(keys)

    def spec_for_settings(self) -> EngineSpec | None:
        """The active model, resolved afresh (registry + settings) whenever an analysis starts."""
        from pneumoview.active_model import resolve_active_model

        model = resolve_active_model(self.settings)
        if (model is None or not model.ready) and self._demo_fallback:
            return EngineSpec("demo")
        if model is None or not model.ready:
            self._model_missing = model.missing if model is not None else ""
            return None
        if model.demo:
            return EngineSpec("demo", bundle=str(model.bundle or ""))
        s = self.settings
        return EngineSpec(
            "bundle",
            bundle=str(model.bundle),
            clip_path=model.clip_path,
            llama_path=model.llama_path,
            device=s.device,
            precision=s.precision,
        )

    def analyse_selected(self) -> AnalysisJob | None:
        return self.analyse(self.selected_keys())

    def analyse_all(self) -> AnalysisJob | None:
        """Analyse the images that have no current result (the rest keep theirs and their decisions)."""
        keys = list(self.session.entries)
        self.session.record_unsupported(keys)  # reports list why the others were not analysed
        todo = self.session.without_current_result(keys)
        if keys and not todo and self.session.analysable(keys):
            self._status("Every image already has a result; use Analysis > Re-analyse All to analyse them again.")
            return None
        return self.analyse(todo or keys)

    def reanalyse_prompt(self) -> tuple[int, int, str]:
        """(images, decisions that would need re-review, the question to ask) for "Re-analyse All"."""
        keys = self.session.analysable(list(self.session.entries))
        loaded = self.analysis_client.loaded if self.analysis_client.loaded_spec == self.engine_spec else None
        fingerprint = str(loaded.get("fingerprint", "")) if loaded else None
        at_stake = self.session.decisions_at_stake(keys, fingerprint)
        model = "the current model" if loaded else "the chosen model (not loaded yet, so any decided image counts)"
        text = (
            f"Analyse all {len(keys)} image(s) again with {model}?\n\n"
            f"{at_stake} reviewer decision(s) were made on another model's output and will need re-review "
            "if the new result differs; they are kept, marked 'needs re-review'."
        )
        return len(keys), at_stake, text

    def reanalyse_all(self, *, confirm: Callable[[str], bool] | None = None) -> AnalysisJob | None:
        """Analyse every image again, after asking when decisions would need re-review."""
        images, at_stake, text = self.reanalyse_prompt()
        if images and at_stake:
            ask = confirm or (
                lambda question: (
                    QMessageBox.question(self, "Re-analyse all images?", question) == QMessageBox.StandardButton.Yes
                )
            )
            if not ask(text):
                self._status("Re-analysis cancelled: nothing changed.")
                return None
        return self.analyse(list(self.session.entries))

    def analyse(self, keys: Iterable[str]) -> AnalysisJob | None:
        keys = list(keys)
        if not keys:
            self._status("Nothing to analyse: open a folder first.")
            return None
        self.engine_spec = self.spec_for_settings()  # whatever is active now, wherever it was activated
        self.engine_is_demo = bool(self.engine_spec is not None and self.engine_spec.demo)
        if self.engine_spec is None:
            self.diagnosis.set_model_installed(False)
            self._offer_model_setup(keys)
            return None
        chosen = self.analysis_operating_point()  # this bundle's operating point, or the user's answer
        if chosen is None:
            return None
        threshold, operating_point_id = chosen
        if not self._claim_task("analysis"):
            return None
        self.session.record_unsupported(keys)
        todo = self.session.analysable(keys)
        skipped = len(keys) - len(todo)
        if not todo:
            self._status(f"None of the {len(keys)} image(s) can be analysed (see the Status column).")
            return None
        items = []
        for k in todo:
            identity = self.session.entries[k].identity
            assert identity is not None  # analysable() keeps only identified files
            items.append(WorkItem.for_identity(k, identity))
        job = AnalysisJob(
            items,
            self.analysis_client,
            self.engine_spec,
            threshold=threshold,
            operating_point_id=operating_point_id,
            persist=self._persist_outputs,
        )
        job.signals.progress.connect(self._on_progress)
        job.signals.partial.connect(self._on_analysis_partial)
        job.signals.finished.connect(lambda n, s=skipped: self._on_analysis_done(n, s))
        job.signals.failed.connect(self._on_analysis_failed)
        job.signals.cancelled.connect(lambda: self._task_done("Analysis cancelled; finished images are kept."))
        self._start_task(job, f"Analysing {len(items)} image(s)...")
        return job

    def _offer_model_setup(self, keys: Sequence[str] = ()) -> None:
        self._pending_analysis = list(keys)  # "Use demo model" analyses them at once
        missing, self._model_missing = self._model_missing, ""
        first = (
            f"The active model cannot run yet: {missing}."
            if missing
            else "No PneumoLLM model is installed, so nothing can be analysed yet."
        )
        box = QMessageBox(
            QMessageBox.Icon.Information,
            "No model installed",
            f"{first}\n\n"
            "Set up the model (CLIP and LLaMA weights and a trained bundle), or try the "
            "demo model (random weights: its output is not a diagnosis).",
            parent=self,
        )
        setup = box.addButton("Set up model...", QMessageBox.ButtonRole.AcceptRole)
        demo = box.addButton("Use demo model", QMessageBox.ButtonRole.ActionRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setModal(False)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        setup.clicked.connect(self.open_setup_dialog)
        demo.clicked.connect(self.use_demo_model)
        box.show()
        self._no_model_box = box

    def _persist_outputs(self, results: list[tuple[str, ImageResult]]) -> list[tuple[str, ImageResult]]:
        """Worker thread: save a batch of results to the store; returns them with their row ids."""
        return self.session.persist_results(results)

    def _on_analysis_partial(self, results: list[tuple[str, ImageResult]]) -> None:
        self.session.apply_results(results)
        failures = [(key, r) for key, r in results if r.status != ANALYSED]
        for key, result in failures:
            entry = self.session.entries.get(key)
            self.problems.add_message(str(entry.path) if entry else key, result.reason, result.reason_code)
        if failures:
            self._problems_changed()

    def _on_analysis_done(self, count: int, skipped: int) -> None:
        extra = f"; {skipped} not analysable" if skipped else ""
        self._task_done(f"Analysis finished: {count} image(s){extra}.")
        self.analysisFinished.emit(count)

    def _on_analysis_failed(self, message: str) -> None:
        self._task_done(f"Analysis failed: {message}")
        self._error("Analysis failed", message)


__all__ = ["AnalysisActions", "model_configured"]
