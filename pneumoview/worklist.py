"""The flat reading worklist (no Qt): one row per image of the session, with its study's reading status.

Rows are built from the session's :class:`~pneumoview.session.ImageEntry` objects (header, model
result, reviewer decision) and the study's stored readings (:mod:`pneumoview.reading`). Every rule
comes from where it lives: the final determination and reader-vs-reader disagreement from
:func:`pneumoview.reading.rules.determine`, the reader's major category from
:meth:`~pneumoview.reading.rules.FinalRule.category`, "needs re-review" from
:func:`pneumoview.results.review_status` (through ``ImageEntry.review_status``). The Qt table
(:mod:`pneumoview.ui.worklist_model`) only shows these rows.

Filters (:data:`FILTERS`): ``all``, ``unread`` (the study still needs a reading from the signed-in
reader: not read by them and not final; with nobody signed in: no reading at all), ``ai-positive``,
``disagreement`` (a reader's major category 0 vs 1/2/3 differs from the AI label, a reviewer
disagreed with the AI, or the first two readers disagreed under the final-determination rule),
``needs-re-review``. :func:`step_unread` gives the next / previous study that needs reading. Images
that cannot be read as frontal chest radiographs (``ImageEntry.diagnosable`` false) are never unread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from pneumoview.reading.rules import (
    ARBITRATION,
    FINAL,
    UNREADABLE,
    FinalDetermination,
    FinalRule,
    SubmittedReading,
    determine,
    latest_per_reader,
)
from pneumoview.report import format_date  # the one DICOM DA -> ISO date rule
from pneumoview.results import REVIEW_NEEDED
from pneumoview.session import ImageEntry

#: Reader-vs-AI comparison: the major category as 0 vs 1/2/3, the only split a binary AI label has.
_BINARY = FinalRule(agree_on="binary", large_opacities=False)


@dataclass(frozen=True)
class StudyReadingState:
    """What the readings of one study amount to (the latest reading of each reader counts)."""

    readers: tuple[str, ...]
    final: FinalDetermination
    reader_categories: tuple[str, ...]  # each reader's "0" / "1+" / "unreadable", in reading order

    @property
    def text(self) -> str:
        """``unread`` / ``read by 1 reader`` / ``read by 2 readers`` / ``final`` / ``arbitration needed``."""
        if self.final.status == FINAL:
            return "final"
        if self.final.status == ARBITRATION:
            return "arbitration needed"
        if not self.readers:
            return "unread"
        n = len(self.readers)
        return f"read by {n} reader{'s' if n != 1 else ''}"

    @property
    def readers_disagree(self) -> bool:
        """The first two readers disagreed under the rule (arbitration needed, or decided by arbitration)."""
        return self.final.status == ARBITRATION or self.final.decided_by == "arbitration"


def reading_state(
    study_uid: str, readings: Sequence[SubmittedReading], rule: FinalRule | None = None
) -> StudyReadingState:
    """The :class:`StudyReadingState` of ``study_uid`` from its stored readings."""
    latest = [r for r in latest_per_reader(readings) if r.study_uid == study_uid]
    return StudyReadingState(
        readers=tuple(r.reader for r in latest),
        final=determine(study_uid, readings, rule),
        reader_categories=tuple(_BINARY.category(r.reading) for r in latest),
    )


@dataclass(frozen=True)
class WorklistRow:
    """One image in the worklist. ``score`` is None when there is no analysed result."""

    key: str
    worker_name: str  # Patient's Name (0010,0010)
    worker_id: str  # Patient ID (0010,0020)
    study_uid: str  # Study Instance UID (0020,000D)
    study_date: str  # Study Date (0008,0020) as YYYY-MM-DD
    view: str  # View Position (0018,5101)
    score: float | None
    ai_label: str  # as shown (DEMO-marked for the demo model); a reason code when not analysable
    ai_positive: bool
    reading: StudyReadingState
    reviewer_disagrees: bool  # the reviewer's agree/disagree/uncertain decision is "disagree"
    needs_re_review: bool
    readable: bool = True  # a frontal chest radiograph (not a CT, a lateral view...: nothing to read)

    @property
    def reading_status(self) -> str:
        return self.reading.text

    @property
    def reader_vs_ai_disagrees(self) -> bool:
        """A reader's category (0 vs 1/2/3) differs from the AI label of this image's analysed result."""
        if self.score is None:
            return False
        ai = "1+" if self.ai_positive else "0"
        return any(c not in (ai, UNREADABLE) for c in self.reading.reader_categories)

    @property
    def disagreement(self) -> bool:
        return self.reader_vs_ai_disagrees or self.reviewer_disagrees or self.reading.readers_disagree

    def needs_reading_by(self, reader: str | None) -> bool:
        """The image is readable and its study still needs a reading: from ``reader`` (not read by
        them, not final), or from anybody when nobody is signed in (no reading at all)."""
        if not self.readable:
            return False
        if not reader:
            return not self.reading.readers
        return reader not in self.reading.readers and self.reading.final.status != FINAL


def _ai(entry: ImageEntry) -> tuple[float | None, str, bool]:
    if not entry.diagnosable:
        code = entry.suitability.code if entry.suitability is not None else ""
        return None, f"n/a ({code})" if code else "n/a", False
    result = entry.result
    if result is None:
        return None, "", False
    if not result.is_analysed or result.probability is None:
        return None, f"- ({result.reason_code})", False
    return float(result.probability), result.shown_label, result.positive


def build_rows(
    entries: Iterable[ImageEntry],
    readings_by_study: Mapping[str, Sequence[SubmittedReading]],
    rule: FinalRule | None = None,
) -> list[WorklistRow]:
    """One row per entry, ordered by study date, worker name and ID, study, file name."""
    states: dict[str, StudyReadingState] = {}
    rows = []
    for entry in entries:
        record = entry.record
        uid = record.study_uid
        if uid not in states:
            states[uid] = reading_state(uid, readings_by_study.get(uid, ()), rule)
        score, label, positive = _ai(entry)
        rows.append(
            WorklistRow(
                key=entry.key,
                worker_name=record.patient_name.replace("^", " ").strip(),
                worker_id=record.patient_id,
                study_uid=uid,
                study_date=format_date(record.study_date),
                view=record.view_position,
                score=score,
                ai_label=label,
                ai_positive=positive,
                reading=states[uid],
                reviewer_disagrees=entry.decision is not None and entry.decision.decision == "disagree",
                needs_re_review=entry.review_status == REVIEW_NEEDED,
                readable=entry.diagnosable,
            )
        )
    rows.sort(key=lambda r: (r.study_date, r.worker_name, r.worker_id, r.study_uid, entry_name(r.key)))
    return rows


def entry_name(key: str) -> str:
    return key.replace("\\", "/").rsplit("/", 1)[-1]


#: (id, title, predicate(row, reader)) of the worklist filters, in menu order.
FILTERS: tuple[tuple[str, str, Callable[[WorklistRow, str | None], bool]], ...] = (
    ("all", "All", lambda row, reader: True),
    ("unread", "Unread", lambda row, reader: row.needs_reading_by(reader)),
    ("ai-positive", "AI-positive", lambda row, reader: row.ai_positive),
    ("disagreement", "Disagreement", lambda row, reader: row.disagreement),
    ("needs-re-review", "Needs re-review", lambda row, reader: row.needs_re_review),
)
_PREDICATES = {name: predicate for name, _title, predicate in FILTERS}


def matches(row: WorklistRow, filter_id: str, reader: str | None = None) -> bool:
    """Whether ``row`` passes the filter ``filter_id`` (one of :data:`FILTERS`) for ``reader``."""
    try:
        predicate = _PREDICATES[filter_id]
    except KeyError:
        raise ValueError(f"unknown worklist filter {filter_id!r}") from None
    return predicate(row, reader)


def filter_rows(rows: Iterable[WorklistRow], filter_id: str, reader: str | None = None) -> list[WorklistRow]:
    return [r for r in rows if matches(r, filter_id, reader)]


def step_unread(
    rows: Sequence[WorklistRow], current_key: str | None, step: int = 1, reader: str | None = None
) -> str | None:
    """The key of the first image of the next (``step`` +1) / previous (-1) study, in ``rows`` order and
    wrapping around, that still needs reading by ``reader``; None when none does. Studies are skipped
    whose only unread images are the current study's (the study on screen is never "next")."""
    if not rows:
        return None
    current_study = next((r.study_uid for r in rows if r.key == current_key), None)
    start = next((i for i, r in enumerate(rows) if r.key == current_key), -1 if step > 0 else 0)
    n = len(rows)
    seen: set[str] = set()
    for offset in range(1, n + 1):
        row = rows[(start + offset * (1 if step > 0 else -1)) % n]
        if row.study_uid == current_study or row.study_uid in seen:
            continue
        seen.add(row.study_uid)
        if row.needs_reading_by(reader):
            if step > 0:
                return row.key
            return next(r.key for r in rows if r.study_uid == row.study_uid)  # the study's first image
    return None


__all__ = [
    "FILTERS",
    "StudyReadingState",
    "WorklistRow",
    "build_rows",
    "filter_rows",
    "format_date",
    "matches",
    "reading_state",
    "step_unread",
]
