"""Priors: the same worker's earlier studies, for side-by-side comparison (Qt-free).

Who is the same worker
    Two images belong to the same worker when their Patient ID (0010,0020) is the same, non-empty
    and not an anonymisation placeholder (:func:`usable_patient_id`), and their Issuer of Patient
    ID (0010,0021) is the same: when either image states an issuer, both must state the same one
    (an ID from another issuer is another worker). Names, birth dates and accession numbers are
    never used to match.

Where priors come from
    The studies open in the session (:class:`pneumoview.session.ReviewSession`) and the images the
    results database knows for that Patient ID (:meth:`pneumoview.store.ResultStore.images_of_patient`).
    A stored image is only offered when its file is still there and its header still says the same
    worker (it is read again with :func:`pneumoview.dicom.scan.read_record`); the database keeps no
    issuer, so this re-read is also what checks the issuer.

Which studies
    Every other study (Study Instance UID (0020,000D)) of the worker dated on or before the current
    one by Study Date (0008,0020) and Study Time (0008,0030), newest first; studies without a usable
    date come last ("date unknown"), as they may be earlier. ``include_later=True`` adds the later ones.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pneumoview import report
from pneumoview.errors import PneumoViewError

if TYPE_CHECKING:
    from pneumoview.dicom.scan import ImageRecord
    from pneumoview.store import ResultStore

log = logging.getLogger(__name__)

#: Patient IDs (upper case, spaces removed) that anonymisers and modalities write instead of a real ID.
PLACEHOLDER_IDS = frozenset(
    {"ANONYMOUS", "ANONYMIZED", "ANONYMISED", "ANON", "UNKNOWN", "NONE", "NULL", "NA", "N/A", "NOID", "NOPATIENTID"}
)
#: Characters an ID made only of is a placeholder too ("0000", "---", "***", "?").
_FILLER = frozenset("0-*?_.#")
SOURCE_SESSION = "open"
SOURCE_STORE = "results database"
#: Views shown first when a study has several images (frontal chest radiographs).
_VIEW_ORDER = {"PA": 0, "AP": 1, "": 2}


def usable_patient_id(patient_id: str) -> bool:
    """True unless the ID is empty, only filler characters (:data:`_FILLER`) or a placeholder (:data:`PLACEHOLDER_IDS`)."""
    text = patient_id.strip()
    if not text or set(text) <= _FILLER:
        return False
    return text.upper().replace(" ", "") not in PLACEHOLDER_IDS


def same_worker(a: ImageRecord, b: ImageRecord) -> bool:
    """The module's rule: same usable Patient ID and same Issuer of Patient ID (see the module)."""
    pid = a.patient_id.strip()
    if not usable_patient_id(pid) or pid != b.patient_id.strip():
        return False
    return a.issuer_of_patient_id.strip() == b.issuer_of_patient_id.strip()


def format_date(yyyymmdd: str) -> str:
    """DICOM DA (YYYYMMDD) -> "YYYY-MM-DD"; "date unknown" for anything else."""
    d = yyyymmdd.strip()
    return report.format_date(d) if len(d) == 8 and d.isdigit() else "date unknown"


def _time_key(tm: str) -> str:
    """DICOM TM (HHMMSS.FFFFFF, trailing parts optional) as a sortable 13-character text."""
    digits = tm.strip().replace(":", "")
    whole, _, fraction = digits.partition(".")
    return (whole + "000000")[:6] + (fraction + "000000")[:6] if whole.isdigit() else "0" * 12


@dataclass(frozen=True)
class StudyOnFile:
    """One study of a worker: its images (header records) and where they were found."""

    study_uid: str  # (0020,000D)
    study_date: str  # (0008,0020) YYYYMMDD
    study_time: str  # (0008,0030)
    description: str  # (0008,1030)
    images: tuple[ImageRecord, ...]
    source: str  # SOURCE_SESSION or SOURCE_STORE

    @property
    def dated(self) -> bool:
        return format_date(self.study_date) != "date unknown"

    @property
    def sort_key(self) -> tuple[str, str]:
        return (self.study_date.strip(), _time_key(self.study_time)) if self.dated else ("", "")

    @property
    def date_text(self) -> str:
        return format_date(self.study_date)

    @property
    def image(self) -> ImageRecord:
        """The image shown for the study: PA, then AP, then any view; then instance number and path."""
        return min(
            self.images,
            key=lambda r: (
                _VIEW_ORDER.get(r.view_position, 3),
                r.instance_number is None,
                r.instance_number or 0,
                str(r.path),
            ),
        )

    @property
    def label(self) -> str:
        """ "2019-05-02  CHEST PA  (2 images, results database)"."""
        what = self.description or self.image.view_position or "study"
        count = f"{len(self.images)} image{'s' if len(self.images) != 1 else ''}"
        return f"{self.date_text}  {what}  ({count}, {self.source})"


def group_studies(records: Iterable[tuple[ImageRecord, str]]) -> list[StudyOnFile]:
    """``(record, source)`` pairs -> one :class:`StudyOnFile` per Study Instance UID (a record without one is a
    study of its own); a study open in the session counts as open even if the database knows it too."""
    grouped: dict[str, list[tuple[ImageRecord, str]]] = {}
    for record, source in records:
        key = record.study_uid or f"file:{os.fspath(record.path)}"
        grouped.setdefault(key, []).append((record, source))
    studies = []
    for items in grouped.values():
        first = items[0][0]
        source = SOURCE_SESSION if any(s == SOURCE_SESSION for _r, s in items) else SOURCE_STORE
        images = tuple(dict((os.fspath(r.path), r) for r, _s in items).values())
        studies.append(
            StudyOnFile(first.study_uid, first.study_date, first.study_time, first.study_description, images, source)
        )
    return studies


def find_priors(
    current: ImageRecord, candidates: Iterable[tuple[ImageRecord, str]], *, include_later: bool = False
) -> list[StudyOnFile]:
    """The other studies of ``current``'s worker among ``candidates`` (``(record, source)``), newest first."""
    if not usable_patient_id(current.patient_id):
        return []
    mine = [
        (r, s)
        for r, s in candidates
        if same_worker(current, r)
        and not (r.study_uid and r.study_uid == current.study_uid)
        and os.fspath(r.path) != os.fspath(current.path)
    ]
    now = StudyOnFile(current.study_uid, current.study_date, current.study_time, "", (current,), SOURCE_SESSION)
    studies = [
        s for s in group_studies(mine) if include_later or not s.dated or not now.dated or s.sort_key <= now.sort_key
    ]
    dated = sorted((s for s in studies if s.dated), key=lambda s: s.sort_key, reverse=True)
    return dated + sorted((s for s in studies if not s.dated), key=lambda s: str(s.image.path))


def stored_records(store: ResultStore, current: ImageRecord, skip_paths: Sequence[str] = ()) -> list[ImageRecord]:
    """Header records of the images the results database knows for ``current``'s Patient ID whose files are
    still readable (headers read again: worker thread). ``skip_paths`` (absolute, e.g. files open already) are
    not read."""
    from pneumoview.dicom.scan import read_record

    if not usable_patient_id(current.patient_id):
        return []
    skip = {os.fspath(Path(p).absolute()) for p in skip_paths}
    out = []
    for info in store.images_of_patient(current.patient_id.strip()):
        path = Path(info.path)
        if os.fspath(path.absolute()) in skip or not path.is_file():
            continue
        try:
            out.append(read_record(path))
        except PneumoViewError as exc:  # moved, replaced or damaged since it was stored: not offered
            log.info("stored prior not readable: %s", exc.reason)
    return out


def priors_for(
    current: ImageRecord,
    open_records: Iterable[ImageRecord],
    store: ResultStore | None = None,
    *,
    include_later: bool = False,
) -> list[StudyOnFile]:
    """:func:`find_priors` over the session's records and (when given) the results database's."""
    opened = list(open_records)
    candidates = [(r, SOURCE_SESSION) for r in opened]
    if store is not None:
        skip = [os.fspath(r.path) for r in opened]
        candidates += [(r, SOURCE_STORE) for r in stored_records(store, current, skip)]
    return find_priors(current, candidates, include_later=include_later)
