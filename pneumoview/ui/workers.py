"""Background work for the GUI: scanning, image preparation, analysis.

Each job is a :class:`QRunnable` run by a :class:`QThreadPool`; it reports through a
:class:`WorkerSignals` object whose signals cross to the GUI thread as queued connections.
Jobs are cancelled cooperatively: :meth:`Job.cancel` sets a flag that the long-running
functions (``scan(cancel=...)``, ``InferenceEngine.predict(cancel=...)``) poll.

Nothing here imports torch: the model runs in a child process (:mod:`pneumoview.service.analysis`).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from pneumoview.errors import CancelledError, PneumoViewError
from pneumoview.results import ImageResult
from pneumoview.service.analysis import WorkItem

if TYPE_CHECKING:
    from pneumoview.service.analysis import AnalysisClient, EngineSpec

log = logging.getLogger(__name__)


class WorkerSignals(QObject):
    """Signals of one job. ``progress(done, total, message)``; ``finished(result)`` or ``failed(message)``."""

    progress = Signal(int, int, str)
    partial = Signal(object)  # a piece of the result (e.g. a batch of predictions)
    problems = Signal(object)  # list[tuple[key, reason]]: items that could not be processed
    finished = Signal(object)
    failed = Signal(str)
    cancelled = Signal()


class Job(QRunnable):
    """A cancellable job: subclasses implement :meth:`work` and may call :meth:`report`."""

    def __init__(self) -> None:
        super().__init__()
        self.setAutoDelete(False)  # Python keeps the reference (signals stay valid)
        self.signals = WorkerSignals()
        self._cancel = threading.Event()
        self.done = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    def is_cancelled(self) -> bool:
        return self._cancel.is_set()

    def report(self, done: int, total: int, message: str = "") -> None:
        self.emit("progress", done, total, message)

    def emit(self, name: str, *args: Any) -> None:
        """Emit a signal unless its receiver side is already gone (application shutting down)."""
        try:
            getattr(self.signals, name).emit(*args)
        except RuntimeError:  # "Signal source has been deleted": nobody is listening any more
            self._cancel.set()

    def work(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def run(self) -> None:  # runs in a pool thread
        # No lower OS priority for these threads: they share the GIL with the GUI thread, and a
        # preempted low-priority thread holding the GIL would stall the GUI (priority inversion).
        # Heavy work (the model) runs in a separate, lower-priority process instead.
        try:
            result = self.work()
        except CancelledError:
            self.emit("cancelled")
        except PneumoViewError as exc:
            self.emit("failed", exc.message)
        except MemoryError:
            self.emit("failed", "not enough memory")
        except Exception as exc:  # noqa: BLE001 - a worker must report, never die silently
            log.error("background job failed:\n%s", traceback.format_exc())
            self.emit("failed", f"{type(exc).__name__}: {exc}")
        else:
            if self.is_cancelled():
                self.emit("cancelled")
            else:
                self.emit("finished", result)
        finally:
            self.done.set()


class FunctionJob(Job):
    """Runs ``fn(*args)`` in the pool; ``finished`` carries its return value.

    ``wanted()``, if given, is asked when the job starts: a job that is no longer wanted (the
    reviewer has already moved to another image) is skipped and reports ``cancelled``.
    """

    def __init__(self, fn: Callable[..., Any], *args: Any, wanted: Callable[[], bool] | None = None) -> None:
        super().__init__()
        self._fn = fn
        self._args = args
        self._wanted = wanted

    def work(self) -> Any:
        if self._wanted is not None and not self._wanted():
            raise CancelledError("no longer needed")
        return self._fn(*self._args)


class ScanJob(Job):
    """Scans files and folders with :func:`pneumoview.dicom.scan.scan` (headers only; PNG/JPEG/TIFF pictures too).

    ``post(result)``, if given, also runs in the worker (e.g. reading earlier results from the
    database) and its return value is what ``finished`` carries.
    """

    def __init__(self, paths: Sequence[str | Path], post: Callable[[Any], Any] | None = None) -> None:
        super().__init__()
        self.paths = [Path(p) for p in paths]
        self.post = post

    def work(self) -> Any:
        from pneumoview.dicom.scan import scan

        last = [0.0]

        def progress(done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] > 0.05 or done == total:  # at most ~20 updates/s
                last[0] = now
                self.report(done, total, f"Reading headers {done}/{total}")

        result = scan(self.paths, progress=progress, cancel=self.is_cancelled, pictures=True)  # + PNG/JPEG/TIFF
        if self.post is not None:
            self.report(result.files_seen, result.files_seen, "Reading earlier results...")
            return self.post(result)
        return result


class AnalysisJob(Job):
    """Runs an analysis in the child process (:class:`pneumoview.service.analysis.AnalysisClient`).

    The child prepares the crops and runs the engine in batches; each ``results`` event carries one
    :class:`~pneumoview.results.ImageResult` per image (failures included). For each batch:
    ``persist(list[tuple[key, ImageResult]])`` runs in this worker thread (saving to the database off
    the GUI thread) and ``partial`` carries its return value (or the list itself);
    ``progress(done, total, message)``.
    """

    def __init__(
        self,
        items: Sequence[WorkItem],
        client: AnalysisClient,
        spec: EngineSpec,
        *,
        threshold: float,
        batch_size: int = 8,
        operating_point_id: str = "",
        persist: Callable[[list[tuple[str, ImageResult]]], Any] | None = None,
    ) -> None:
        super().__init__()
        self.items = list(items)
        self.client = client
        self.spec = spec
        self.threshold = threshold
        self.batch_size = max(1, batch_size)
        self.operating_point_id = operating_point_id
        self.persist = persist

    def cancel(self) -> None:
        super().cancel()
        self.client.cancel()

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        total = len(self.items)
        if kind == "loading":
            self.report(0, total, f"Loading the model ({event.get('engine', '')})...")
        elif kind == "loaded":
            self.report(0, total, f"Model loaded: {event.get('model_name', '')}")
        elif kind == "results":
            results = [(item.key, item.result) for item in event.get("items", [])]
            self.emit("partial", self.persist(results) if self.persist is not None else results)
        elif kind == "progress":
            done = int(event.get("done", 0))
            self.report(done, total, f"Analysed {done}/{total}")

    def work(self) -> int:
        from pneumoview.service.analysis import analyse_request, error_from_event

        if self.is_cancelled():
            raise CancelledError("analysis cancelled")
        request = analyse_request(
            self.spec,
            self.items,
            threshold=self.threshold,
            batch_size=self.batch_size,
            operating_point_id=self.operating_point_id,
        )
        final = self.client.request(self.spec, request, self._on_event)
        if final.get("event") == "cancelled":
            raise CancelledError("analysis cancelled")
        if final.get("event") == "error":
            raise error_from_event(final)
        return int(final.get("count", 0))


class ValidateJob(Job):
    """Loads a model in the analysis process to check a setup; ``finished`` carries the
    ``loaded`` event, or the PneumoViewError that stopped it (so the dialog can pick a heading)."""

    def __init__(self, client: AnalysisClient, spec: EngineSpec) -> None:
        super().__init__()
        self.client = client
        self.spec = spec

    def work(self) -> dict[str, Any] | PneumoViewError:
        from pneumoview.service.analysis import error_from_event

        loaded: dict[str, Any] = {}
        final = self.client.request(
            self.spec, {"cmd": "validate"}, lambda e: loaded.update(e) if e.get("event") == "loaded" else None
        )
        if final.get("event") == "error":
            return error_from_event(final)
        return loaded or self.client.loaded or {}


def start(job: Job, pool: QThreadPool | None = None) -> Job:
    (pool or QThreadPool.globalInstance()).start(job)
    return job
