"""The review session: what the reviewer has opened, what the model said, what the reviewer decided.

Plain Python, no Qt and no torch, so it can be tested on its own (napari's habit: a model that
emits events, with the Qt item models as thin adapters over it). The desktop application
(:mod:`pneumoview.ui`) owns one :class:`ReviewSession`; it

* merges scan results (:func:`pneumoview.dicom.scan.scan`) — re-opening a folder adds only new
  images and keeps what is already known;
* asks :func:`pneumoview.dicom.suitability.assess` whether each image can be diagnosed;
* holds the model's output and the reviewer's decision per image, persisted through a
  :class:`SessionStore` (engineer E's :class:`pneumoview.store.ResultStore` via
  :class:`ResultStoreAdapter`), so that re-opening a folder or restarting shows them again;
* tells listeners what changed through :class:`Event` callbacks.

The key of an image is its SOP Instance UID (0008,0018), else its path (as the store expects).
"""

from __future__ import annotations

import datetime as _dt
import enum
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from pneumoview.labels import DECISIONS, DEMO_MARK

__all__ = ["DECISIONS", "DEMO_MARK", "AnalysisResult", "Decision", "Event", "ImageEntry", "ReviewSession",
           "ResultStoreAdapter", "SessionStore", "Status", "image_key"]

log = logging.getLogger(__name__)

POSITIVE_LABEL = "pneumoconiosis"
NEGATIVE_LABEL = "normal"

T = TypeVar("T")


class Event(Generic[T]):
    """A minimal callback list: ``event.connect(fn)``, ``event.emit(value)``."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[[T], None]] = []

    def connect(self, callback: Callable[[T], None]) -> None:
        self._callbacks.append(callback)

    def disconnect(self, callback: Callable[[T], None]) -> None:
        self._callbacks.remove(callback)

    def emit(self, value: T) -> None:
        for callback in list(self._callbacks):
            callback(value)


class Status(str, enum.Enum):
    """What the browser shows in the status column of an image."""

    NOT_ANALYSED = "not analysed"
    ANALYSED = "analysed"
    UNSUPPORTED = "unsupported"
    FAILED = "failed"
    REVIEWED = "reviewed"


@dataclass(frozen=True)
class AnalysisResult:
    """The model's output for one image, with enough context to audit it later."""

    probability: float          # P(pneumoconiosis), class index 0 of the model's logits
    label: str                  # label at the threshold used when it was computed
    threshold: float
    model_id: str               # id of the bundle (its manifest)
    model_name: str
    demo: bool                  # True = the built-in random demo model: never a diagnosis
    device: str = ""            # device used, e.g. "cpu"
    plan: str = ""              # the engine's plan (dtypes, quantisation), one line
    model_version: str = ""
    fingerprint: str = ""       # bundle fingerprint
    analysed_at: str = ""       # ISO 8601 UTC
    box: tuple[int, int, int, int] | None = None   # lung rectangle x0, y0, x1, y1 (exclusive)
    box_fallback: bool = False  # True = no lungs found; the whole image was used

    def label_at(self, threshold: float) -> str:
        """The label this probability gets at ``threshold`` (P >= threshold -> positive)."""
        return POSITIVE_LABEL if self.probability >= threshold else NEGATIVE_LABEL


@dataclass(frozen=True)
class Decision:
    """A reviewer's decision about the model's output for one image."""

    decision: str               # one of DECISIONS
    comment: str
    reviewer: str
    decided_at: str = ""

    def __post_init__(self) -> None:
        if self.decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}, not {self.decision!r}")


@dataclass
class ImageEntry:
    """One image of the session: header record, suitability, model output, decision."""

    key: str
    record: Any                          # pneumoview.dicom.scan.ImageRecord
    suitability: Any = None              # pneumoview.dicom.suitability.Suitability | None
    result: AnalysisResult | None = None
    decision: Decision | None = None
    error: str | None = None             # why the last analysis of this image failed

    @property
    def path(self) -> Path:
        return Path(self.record.path)

    @property
    def diagnosable(self) -> bool:
        return self.suitability is None or bool(self.suitability.diagnosable)

    @property
    def status(self) -> Status:
        if not self.diagnosable:
            return Status.UNSUPPORTED
        if self.decision is not None:
            return Status.REVIEWED
        if self.result is not None:
            return Status.ANALYSED
        if self.error is not None:
            return Status.FAILED
        return Status.NOT_ANALYSED

    def status_text(self) -> str:
        """Status with its reason where there is one ("unsupported: lateral-view")."""
        status = self.status
        if status is Status.UNSUPPORTED and self.suitability is not None:
            return f"unsupported: {self.suitability.code or self.suitability.reason}"
        if status is Status.FAILED:
            return f"failed: {self.error}"
        return status.value


def image_key(record: Any) -> str:
    """The store's key for an image: SOP Instance UID (0008,0018), else its absolute path."""
    from pneumoview.store import image_key_for
    return image_key_for(record)


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class SessionStore(Protocol):
    """What the session needs from persistence (engineer E's store, through :class:`ResultStoreAdapter`)."""

    def load(self, entries: Sequence[ImageEntry]) -> dict[str, tuple[AnalysisResult | None, Decision | None]]: ...

    def save_results(self, items: Sequence[tuple[ImageEntry, AnalysisResult]]) -> None: ...

    def save_unsupported(self, entries: Sequence[ImageEntry]) -> None: ...

    def save_decision(self, entries: Sequence[ImageEntry], decision: Decision) -> None: ...

    def report_rows(self, keys: Sequence[str] | None) -> list[Any]: ...


class ResultStoreAdapter:
    """:class:`SessionStore` over :class:`pneumoview.store.ResultStore` (SQLite, history kept)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def load(self, entries: Sequence[ImageEntry]) -> dict[str, tuple[AnalysisResult | None, Decision | None]]:
        # Record the images first: decisions may be saved before any result.
        self.store.upsert_images([e.record for e in entries])
        out: dict[str, tuple[AnalysisResult | None, Decision | None]] = {}
        for key, state in self.store.states([e.key for e in entries]).items():
            result = None
            r = state.result
            if r is not None and r.probability is not None and not r.unsupported:
                result = AnalysisResult(
                    probability=float(r.probability), label=r.label, threshold=float(r.threshold or 0.5),
                    model_id=r.model_id, model_name=r.model_name, demo=bool(r.demo), device=r.device,
                    plan=r.plan, model_version=r.model_version, fingerprint=r.model_fingerprint,
                    analysed_at=r.analysed_at)
            decision = None
            d = state.decision
            if d is not None:
                decision = Decision(decision=d.decision, comment=d.comment, reviewer=d.reviewer,
                                    decided_at=d.reviewed_at)
            out[key] = (result, decision)
        return out

    def save_results(self, items: Sequence[tuple[ImageEntry, AnalysisResult]]) -> None:
        with self.store.batch():  # one transaction (one disk sync) per batch of results
            for entry, result in items:
                self._save_result(entry, result)

    def _save_result(self, entry: ImageEntry, result: AnalysisResult) -> None:
        self.store.save_result(
            entry.key, image=entry.record, probability=result.probability, threshold=result.threshold,
            label=result.label, model_id=result.model_id, model_name=result.model_name,
            model_version=result.model_version, model_fingerprint=result.fingerprint, demo=result.demo,
            plan=result.plan, device=result.device, analysed_at=result.analysed_at or None)

    def save_unsupported(self, entries: Sequence[ImageEntry]) -> None:
        with self.store.batch():
            for entry in entries:
                s = entry.suitability
                current = self.store.result_for(entry.key)
                if current is not None and current.unsupported_code == (s.code or "unsupported"):
                    continue
                self.store.save_unsupported(entry.key, code=s.code or "unsupported", reason=s.reason,
                                            image=entry.record)

    def save_decision(self, entries: Sequence[ImageEntry], decision: Decision) -> None:
        with self.store.batch():  # a study-level decision is all-or-nothing
            for entry in entries:
                self.store.save_decision(entry.key, decision.decision, decision.comment, decision.reviewer,
                                         reviewed_at=decision.decided_at or None)

    def report_rows(self, keys: Sequence[str] | None) -> list[Any]:
        return self.store.report_rows(keys)


@dataclass
class PreparedScan:
    """A scan with its entries made ready off the GUI thread (see :meth:`ReviewSession.prepare_scan`)."""

    scan: Any                     # pneumoview.dicom.scan.ScanResult
    entries: list[ImageEntry]


class ReviewSession:
    """All images the reviewer has opened, their model output and decisions.

    Events: ``reset`` (the image set changed: rebuild views), ``entries_changed`` (list of keys
    whose result / decision / status changed), ``problems_changed`` (list of new problems).
    """

    def __init__(self, store: SessionStore | None = None,
                 assess: Callable[[Any], Any] | None = None) -> None:
        self.store = store
        self._assess = assess
        self.entries: dict[str, ImageEntry] = {}
        self.problems: list[Any] = []   # pneumoview.dicom.scan.ScanProblem
        self.reset = Event[None]()
        self.entries_changed = Event[list[str]]()
        self.problems_changed = Event[list[Any]]()

    # -- opening ---------------------------------------------------------------------------
    def prepare_scan(self, scan_result: Any) -> PreparedScan:
        """Suitability and stored results/decisions for a scan's images (safe in a worker thread:
        reads the database, changes nothing in the session)."""
        entries: dict[str, ImageEntry] = {}
        for record in scan_result.images:
            key = image_key(record)
            if key not in entries:
                entries[key] = ImageEntry(key=key, record=record, suitability=self._suitability(record))
        if self.store is not None and entries:
            known = self.store.load(list(entries.values()))
            for entry in entries.values():
                entry.result, entry.decision = known.get(entry.key, (None, None))
        return PreparedScan(scan_result, list(entries.values()))

    def merge_scan(self, prepared: PreparedScan) -> list[str]:
        """Add a prepared scan (GUI thread); images already open keep their state. Returns new keys."""
        added: list[str] = []
        for entry in prepared.entries:
            if entry.key not in self.entries:
                self.entries[entry.key] = entry
                added.append(entry.key)
        known = {(str(p.path), p.reason) for p in self.problems}
        new_problems = [p for p in prepared.scan.problems if (str(p.path), p.reason) not in known]
        self.problems.extend(new_problems)
        if added:
            self.reset.emit(None)
        if new_problems:
            self.problems_changed.emit(new_problems)
        return added

    def add_scan(self, scan_result: Any) -> list[str]:
        """Merge a :class:`ScanResult` (``prepare_scan`` + ``merge_scan``); returns the new keys."""
        return self.merge_scan(self.prepare_scan(scan_result))

    def _suitability(self, record: Any) -> Any:
        if self._assess is None:
            from pneumoview.dicom.suitability import assess
            self._assess = assess
        return self._assess(record)

    def clear(self) -> None:
        self.entries.clear()
        self.problems.clear()
        self.reset.emit(None)

    # -- structure ---------------------------------------------------------------------------
    def patients(self) -> list[Any]:
        """Patients -> studies -> series -> records (:func:`pneumoview.dicom.scan.group_records` order)."""
        from pneumoview.dicom.scan import group_records
        return group_records(e.record for e in self.entries.values())

    def study_keys(self, key: str) -> list[str]:
        """Keys of all images in the same study as ``key``."""
        study_uid = self.entries[key].record.study_uid
        return [k for k, e in self.entries.items() if e.record.study_uid == study_uid]

    def analysable(self, keys: Iterable[str]) -> list[str]:
        """The keys among ``keys`` whose images can be diagnosed."""
        return [k for k in keys if k in self.entries and self.entries[k].diagnosable]

    # -- results and decisions ----------------------------------------------------------------
    def persist_results(self, results: Sequence[tuple[str, AnalysisResult]]) -> None:
        """Write model output to the store only (may run in a worker thread)."""
        items = [(self.entries[key], result) for key, result in results if key in self.entries]
        if self.store is not None and items:
            self.store.save_results(items)

    def apply_results(self, results: Sequence[tuple[str, AnalysisResult]]) -> None:
        """Show already-persisted model output (GUI thread): update entries, tell listeners."""
        changed = []
        for key, result in results:
            entry = self.entries.get(key)
            if entry is not None:
                entry.result = result
                entry.error = None
                changed.append(key)
        if changed:
            self.entries_changed.emit(changed)

    def set_results(self, results: Sequence[tuple[str, AnalysisResult]]) -> None:
        """Record model output: persisted first, then listeners are told."""
        self.persist_results(results)
        self.apply_results(results)

    def set_failures(self, failures: Sequence[tuple[str, str]]) -> None:
        changed = []
        for key, reason in failures:
            entry = self.entries.get(key)
            if entry is not None:
                entry.error = reason
                changed.append(key)
        if changed:
            self.entries_changed.emit(changed)

    def set_decision(self, keys: Iterable[str], decision: str, comment: str, reviewer: str) -> Decision:
        """Record the reviewer's decision for each image in ``keys`` (e.g. a whole study)."""
        value = Decision(decision=decision, comment=comment, reviewer=reviewer, decided_at=utc_now())
        entries = [self.entries[key] for key in keys]
        if self.store is not None and entries:
            self.store.save_decision(entries, value)
        changed = []
        for entry in entries:
            entry.decision = value
            changed.append(entry.key)
        if changed:
            self.entries_changed.emit(changed)
        return value

    def record_unsupported(self, keys: Iterable[str]) -> None:
        """Persist the reason code of images the model cannot judge (so reports list them)."""
        entries = [self.entries[k] for k in keys if k in self.entries and not self.entries[k].diagnosable]
        if self.store is not None and entries:
            self.store.save_unsupported(entries)

    def report_rows(self, keys: Sequence[str] | None = None) -> list[Any]:
        """Rows for :func:`pneumoview.report.export_csv` (all, or these keys)."""
        if self.store is None:
            raise RuntimeError("no results database: nothing to export")
        return self.store.report_rows(list(keys) if keys is not None else None)

    def counts(self) -> dict[Status, int]:
        out = {s: 0 for s in Status}
        for entry in self.entries.values():
            out[entry.status] += 1
        return out
