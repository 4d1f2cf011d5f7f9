"""The review session: what the reviewer has opened, what the model said, what the reviewer decided.

Plain Python, no Qt and no torch, so it can be tested on its own (a model that emits events, with
the Qt item models as thin adapters over it). The desktop application (:mod:`pneumoview.ui`) owns
one :class:`ReviewSession`; it

* merges scan results (:func:`pneumoview.dicom.scan.scan`): every file is an entry of its own
  (keyed by its absolute path), identified by SOP Instance UID + content hash
  (:class:`pneumoview.results.ImageIdentity`); files sharing a UID are all listed and flagged
  ``duplicate-uid`` in the problems;
* asks :func:`pneumoview.dicom.suitability.assess` whether each image can be diagnosed;
* holds each image's latest :class:`~pneumoview.results.ImageResult` and the reviewer's decision,
  persisted through :class:`ResultStoreAdapter` (:class:`pneumoview.store.ResultStore`); a decision
  is bound to the result it judged and turns "needs re-review" when a later result differs
  (:func:`pneumoview.results.review_status`);
* tells listeners what changed through :class:`Event` callbacks.
"""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from pneumoview.clock import utc_now
from pneumoview.labels import DECISIONS, DEMO_MARK
from pneumoview.results import (
    ANALYSED,
    NOT_ANALYSED,
    REASON_DUPLICATE_UID,
    REVIEW_NEEDED,
    ImageIdentity,
    ImageResult,
    display_path,
    failed,
    identify,
    review_status,
)

if TYPE_CHECKING:
    from pneumoview.dicom.scan import ImageRecord, Patient, ScanProblem, ScanResult
    from pneumoview.dicom.suitability import Suitability
    from pneumoview.report import ReportRow
    from pneumoview.store import ImageInfo, ImageState, ResultStore

__all__ = [
    "DECISIONS",
    "DEMO_MARK",
    "Decision",
    "Event",
    "ImageEntry",
    "ResultStoreAdapter",
    "ReviewSession",
    "Status",
    "file_key",
    "utc_now",
]

log = logging.getLogger(__name__)

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
    """What the browser shows in the status column of an image (and filters on)."""

    NOT_ANALYSED = "not analysed"
    ANALYSED = "analysed"
    UNSUPPORTED = "unsupported"
    FAILED = "failed"
    REVIEWED = "reviewed"
    NEEDS_REVIEW = "needs re-review"


@dataclass(frozen=True)
class Decision:
    """A reviewer's decision about one image, bound to the result it judged (``result_id``)."""

    decision: str  # one of DECISIONS
    comment: str
    reviewer: str
    decided_at: str = ""
    result_id: int | None = None

    def __post_init__(self) -> None:
        if self.decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}, not {self.decision!r}")


@dataclass
class ImageEntry:
    """One file of the session: header record, identity, suitability, latest result, decision."""

    key: str  # the file's absolute path (unique per file)
    record: ImageRecord
    identity: ImageIdentity | None = None  # None: the file could not be read to hash it (see error)
    suitability: Suitability | None = None
    result: ImageResult | None = None
    decision: Decision | None = None
    judged: ImageResult | None = None  # the result the decision judged
    error: str | None = None  # why the last analysis (or hashing) of this image failed
    duplicates: list[str] = field(default_factory=list)  # other files with the same SOP Instance UID
    file_stamp: str = ""  # size:mtime_ns:ctime_ns of the file when it was hashed

    @property
    def path(self) -> Path:
        return Path(self.record.path)

    @property
    def image_key(self) -> str | None:
        """The results database key (UID + content hash), None when the file could not be hashed."""
        return self.identity.key if self.identity is not None else None

    @property
    def diagnosable(self) -> bool:
        return self.suitability is None or bool(self.suitability.diagnosable)

    @property
    def has_current_result(self) -> bool:
        """An analysed result (a failure or a 'not analysed' record does not count)."""
        return self.result is not None and self.result.status == ANALYSED

    @property
    def review_status(self) -> str:
        return review_status(self.decision is not None, self.judged, self.result)

    @property
    def status(self) -> Status:
        if not self.diagnosable:
            return Status.UNSUPPORTED
        if self.decision is not None:
            return Status.NEEDS_REVIEW if self.review_status == REVIEW_NEEDED else Status.REVIEWED
        if self.has_current_result:
            return Status.ANALYSED
        if self.error is not None or (self.result is not None and self.result.status != NOT_ANALYSED):
            return Status.FAILED
        return Status.NOT_ANALYSED

    def status_text(self) -> str:
        """Status with its reason where there is one ("unsupported: lateral-view")."""
        status = self.status
        if status is Status.UNSUPPORTED and self.suitability is not None:
            return f"unsupported: {self.suitability.code or self.suitability.reason}"
        if status is Status.FAILED:
            reason = self.error or (self.result.reason_code if self.result is not None else "")
            return f"failed: {reason}"
        if self.result is not None and self.result.below_quality_gate:
            return f"{status.value} (below quality gate)"
        return status.value


def file_key(record: ImageRecord) -> str:
    """The session's key for a file: its absolute path (text, surrogate escapes kept)."""
    return os.fspath(Path(record.path).absolute())


def file_stamp(path: str) -> str:
    """``size:mtime_ns:ctime_ns`` of a file (OSError when it cannot be read): unchanged stamp, unchanged bytes."""
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


class ResultStoreAdapter:
    """The session's persistence over :class:`pneumoview.store.ResultStore` (SQLite, history kept)."""

    def __init__(self, store: ResultStore) -> None:
        self.store = store

    @staticmethod
    def info(entry: ImageEntry) -> ImageInfo:
        from pneumoview.store import ImageInfo

        assert entry.identity is not None
        return ImageInfo.from_record(entry.record, entry.identity, entry.file_stamp)

    def known_hashes(self, paths: Sequence[str]) -> dict[str, tuple[str, str, str]]:
        return self.store.known_hashes(paths)

    def load(self, entries: Sequence[ImageEntry]) -> dict[str, ImageState]:
        """Record the images (decisions may come before any result) -> their stored state by image key."""
        known = [e for e in entries if e.identity is not None]
        infos: dict[str, ImageInfo] = {}
        for e in known:
            assert e.image_key is not None  # identified above
            infos.setdefault(e.image_key, self.info(e))
        self.store.upsert_images(infos.values())
        return self.store.states(infos)

    def duplicates(self, entries: Sequence[ImageEntry]) -> dict[str, list[str]]:
        return self.store.duplicates(self.info(e) for e in entries if e.identity is not None)

    def save_results(self, items: Sequence[tuple[ImageEntry, ImageResult]]) -> list[ImageResult]:
        """One transaction (one disk sync) per batch; returns the results with their row ids."""
        return self.store.save_many((result, self.info(entry)) for entry, result in items)

    def save_decision(self, entries: Sequence[ImageEntry], decision: Decision) -> list[Decision]:
        """A decision per entry, each bound to the result that entry shows (all or nothing)."""
        out = []
        with self.store.batch():
            for entry in entries:
                assert entry.image_key is not None
                result_id = entry.result.id if entry.result is not None else None
                self.store.save_decision(
                    entry.image_key,
                    decision.decision,
                    decision.comment,
                    decision.reviewer,
                    result_id=result_id,
                    reviewed_at=decision.decided_at or None,
                )
                out.append(
                    Decision(decision.decision, decision.comment, decision.reviewer, decision.decided_at, result_id)
                )
        return out

    def report_rows(self, image_keys: Sequence[str] | None) -> list[ReportRow]:
        return self.store.report_rows(image_keys)


@dataclass
class PreparedScan:
    """A scan with its entries made ready off the GUI thread (see :meth:`ReviewSession.prepare_scan`)."""

    scan: ScanResult
    entries: list[ImageEntry]


class ReviewSession:
    """All files the reviewer has opened, their model output and decisions.

    Events: ``reset`` (the image set changed: rebuild views), ``entries_changed`` (list of keys
    whose result / decision / status changed), ``problems_changed`` (list of new problems).
    """

    def __init__(
        self, store: ResultStoreAdapter | None = None, assess: Callable[[ImageRecord], Suitability] | None = None
    ) -> None:
        self.store = store
        self._assess = assess
        self.entries: dict[str, ImageEntry] = {}
        self.problems: list[ScanProblem] = []
        self.reset = Event[None]()
        self.entries_changed = Event[list[str]]()
        self.problems_changed: Event[list[ScanProblem]] = Event()

    # -- opening ---------------------------------------------------------------------------
    def prepare_scan(self, scan_result: ScanResult) -> PreparedScan:
        """Identity (content hash), suitability and stored state for a scan's images (safe in a worker
        thread: reads the files and the database, changes nothing in the session)."""
        entries: dict[str, ImageEntry] = {}
        for record in scan_result.images:
            key = file_key(record)
            if key not in entries and key not in self.entries:
                entries[key] = ImageEntry(key=key, record=record, suitability=self._suitability(record))
        known = self.store.known_hashes([display_path(k) for k in entries]) if self.store is not None else {}
        for key, entry in entries.items():
            try:
                entry.file_stamp = file_stamp(key)
                uid, digest, stamp = known.get(display_path(key), ("", "", ""))
                if stamp == entry.file_stamp and uid == entry.record.sop_instance_uid:
                    entry.identity = ImageIdentity(uid, digest, key)  # unchanged since it was hashed
                else:
                    entry.identity = identify(key, entry.record.sop_instance_uid)
            except OSError as exc:
                entry.error = f"unreadable: {exc.strerror or exc}"
        if self.store is not None and entries:
            states = self.store.load(list(entries.values()))
            for entry in entries.values():
                state = states.get(entry.image_key or "")
                if state is not None:
                    self._apply_state(entry, state)
        return PreparedScan(scan_result, list(entries.values()))

    @staticmethod
    def _apply_state(entry: ImageEntry, state: ImageState) -> None:
        entry.result = state.result
        entry.judged = state.judged
        d = state.decision
        entry.decision = None if d is None else Decision(d.decision, d.comment, d.reviewer, d.reviewed_at, d.result_id)

    def merge_scan(self, prepared: PreparedScan) -> list[str]:
        """Add a prepared scan (GUI thread); files already open keep their state. Returns new keys."""
        added: list[str] = []
        for entry in prepared.entries:
            if entry.key not in self.entries:
                self.entries[entry.key] = entry
                added.append(entry.key)
        known = {(str(p.path), p.reason) for p in self.problems}
        new_problems = [p for p in prepared.scan.problems if (str(p.path), p.reason) not in known]
        new_problems += [p for p in self._duplicate_problems(added) if (str(p.path), p.reason) not in known]
        self.problems.extend(new_problems)
        if added:
            self.reset.emit(None)
        if new_problems:
            self.problems_changed.emit(new_problems)
        return added

    def _duplicate_problems(self, added: Sequence[str]) -> list[ScanProblem]:
        """Flag every file whose SOP Instance UID another file (open now, or known to the database) also has."""
        from pneumoview.dicom.scan import ScanProblem

        by_uid: dict[str, list[ImageEntry]] = {}
        for entry in self.entries.values():
            if entry.record.sop_instance_uid:
                by_uid.setdefault(entry.record.sop_instance_uid, []).append(entry)
        stored = self.store.duplicates([self.entries[k] for k in added]) if self.store is not None else {}
        problems = []
        touched = {self.entries[k].record.sop_instance_uid for k in added}
        for uid in sorted(u for u in touched if u):
            group = by_uid.get(uid, [])
            for entry in group:
                others = [os.fspath(e.path) for e in group if e is not entry]
                others += [
                    p
                    for p in stored.get(entry.image_key or "", [])
                    if p not in others and p != os.fsencode(entry.key).decode("utf-8", "backslashreplace")
                ]
                if not others or others == entry.duplicates:
                    continue
                entry.duplicates = others
                problems.append(
                    ScanProblem(entry.path, f"same SOP Instance UID as {'; '.join(others)}", REASON_DUPLICATE_UID)
                )
        return problems

    def add_scan(self, scan_result: ScanResult) -> list[str]:
        """Merge a :class:`ScanResult` (``prepare_scan`` + ``merge_scan``); returns the new keys."""
        return self.merge_scan(self.prepare_scan(scan_result))

    def _suitability(self, record: ImageRecord) -> Suitability:
        if self._assess is None:
            from pneumoview.dicom.suitability import assess

            self._assess = assess
        return self._assess(record)

    def clear(self) -> None:
        self.entries.clear()
        self.problems.clear()
        self.reset.emit(None)

    # -- structure ---------------------------------------------------------------------------
    def patients(self) -> list[Patient]:
        """Patients -> studies -> series -> records (:func:`pneumoview.dicom.scan.group_records` order)."""
        from pneumoview.dicom.scan import group_records

        return group_records(e.record for e in self.entries.values())

    def study_keys(self, key: str) -> list[str]:
        """Keys of all images in the same study as ``key``."""
        study_uid = self.entries[key].record.study_uid
        return [k for k, e in self.entries.items() if e.record.study_uid == study_uid]

    def analysable(self, keys: Iterable[str]) -> list[str]:
        """The keys among ``keys`` whose images can be diagnosed (and could be read to hash them)."""
        return [
            k
            for k in keys
            if k in self.entries and self.entries[k].diagnosable and self.entries[k].identity is not None
        ]

    def without_current_result(self, keys: Iterable[str]) -> list[str]:
        """The analysable keys among ``keys`` without an analysed result: what "Analyse All" does by default."""
        return [k for k in self.analysable(keys) if not self.entries[k].has_current_result]

    def decisions_at_stake(self, keys: Iterable[str], bundle_fingerprint: str | None = None) -> int:
        """How many decisions among ``keys`` would need re-review if these images were analysed again with the
        model whose weights have ``bundle_fingerprint`` (None: not known yet, every decided image counts)."""
        count = 0
        for key in keys:
            entry = self.entries.get(key)
            if entry is None or entry.decision is None or entry.review_status == REVIEW_NEEDED:
                continue
            judged = entry.judged
            if (
                bundle_fingerprint is None
                or judged is None
                or judged.provenance.bundle_fingerprint != bundle_fingerprint
            ):
                count += 1
        return count

    def _entries_for(self, key: str) -> list[ImageEntry]:
        """The entry ``key`` and every byte-identical copy open beside it (the same image)."""
        entry = self.entries.get(key)
        if entry is None:
            return []
        if entry.image_key is None:
            return [entry]
        return [e for e in self.entries.values() if e.image_key == entry.image_key]

    # -- results and decisions ----------------------------------------------------------------
    def persist_results(self, results: Sequence[tuple[str, ImageResult]]) -> list[tuple[str, ImageResult]]:
        """Write model output to the store only (may run in a worker thread); returns it with row ids."""
        items = [(self.entries[key], result) for key, result in results if key in self.entries]
        if self.store is None or not items:
            return [(entry.key, result) for entry, result in items]
        saved = self.store.save_results(items)
        return [(entry.key, result) for (entry, _r), result in zip(items, saved, strict=True)]

    def apply_results(self, results: Sequence[tuple[str, ImageResult]]) -> None:
        """Show already-persisted model output (GUI thread): update entries, tell listeners."""
        changed = []
        for key, result in results:
            for entry in self._entries_for(key):
                entry.result = result
                entry.error = None
                changed.append(entry.key)
        if changed:
            self.entries_changed.emit(changed)

    def set_results(self, results: Sequence[tuple[str, ImageResult]]) -> list[tuple[str, ImageResult]]:
        """Record model output: persisted first, then listeners are told."""
        saved = self.persist_results(results)
        self.apply_results(saved)
        return saved

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
        """Record the reviewer's decision for each image in ``keys`` (e.g. a whole study), each bound to the
        result it shows now."""
        value = Decision(decision=decision, comment=comment, reviewer=reviewer, decided_at=utc_now())
        entries = [self.entries[key] for key in keys]
        unreadable = [e.key for e in entries if e.identity is None]
        if unreadable:
            raise ValueError(f"cannot record a decision for a file that could not be read: {unreadable[0]}")
        bound = [
            Decision(decision, comment, reviewer, value.decided_at, e.result.id if e.result else None) for e in entries
        ]
        if self.store is not None and entries:
            bound = self.store.save_decision(entries, value)
        changed = []
        for entry, stored in zip(entries, bound, strict=True):
            for same in self._entries_for(entry.key):
                same.decision = stored
                same.judged = same.result
                changed.append(same.key)
        if changed:
            self.entries_changed.emit(changed)
        return value

    def record_unsupported(self, keys: Iterable[str]) -> None:
        """Persist the reason code of images the model cannot judge (so reports list them)."""
        todo = []
        for key in keys:
            entry = self.entries.get(key)
            if entry is None or entry.diagnosable or entry.identity is None:
                continue
            s = entry.suitability
            if s is None:  # not diagnosable implies a suitability (narrowing for the type checker)
                continue
            code = s.code or "unsupported"
            if entry.result is not None and entry.result.reason_code == code:
                continue
            todo.append((key, failed(entry.identity, code, s.reason, status=NOT_ANALYSED)))
        if todo:
            self.set_results(todo)

    def report_rows(self, keys: Sequence[str] | None = None) -> list[ReportRow]:
        """Rows for :func:`pneumoview.report.export_csv`: all images in the database (``keys`` None), or
        one row per selected file (its real path, and the other files sharing its UID)."""
        from dataclasses import replace

        if self.store is None:
            raise RuntimeError("no results database: nothing to export")
        if keys is None:
            return self.store.report_rows(None)
        entries = [self.entries[k] for k in keys if k in self.entries and self.entries[k].image_key]
        by_image = {
            r.content_sha256 and f"{r.sop_instance_uid or '-'}|{r.content_sha256}": r
            for r in self.store.report_rows([e.image_key for e in entries if e.image_key])
        }
        rows = []
        for entry in entries:
            row = by_image.get(entry.image_key) if entry.image_key else None
            if row is not None:
                rows.append(replace(row, path=entry.key, duplicates=tuple(entry.duplicates) or row.duplicates))
        return rows

    def counts(self) -> dict[Status, int]:
        out = {s: 0 for s in Status}
        for entry in self.entries.values():
            out[entry.status] += 1
        return out
