"""CSV reports: one row per analysed image, written atomically, UTF-8 with BOM for Excel.

Rows come from :meth:`pneumoview.store.ResultStore.report_rows` (``image_keys=`` the user's
selection, or None for all). What the file holds is decided by :class:`ExportOptions`:

* ``include_names`` (default off): adds the *Patient name* column (DICOM ``^`` separators
  become spaces).
* ``include_source_path`` (default on): adds the *Source path* column.
* ``pseudonymise``: patient ID, study UID and accession number are replaced by keyed hashes
  (HMAC-SHA256 with the user's secret key, first 16 hex digits, prefixed ``P-``, ``S-``, ``A-``),
  so rows of one patient can still be grouped but not traced back without the key. Patient
  names, source paths (folder and file names often carry names) and the reviewers' free-text
  comments (which may name the patient) are left out, whatever the other options say. Study
  dates, the view and all model/review fields stay.

Times are UTC as ``YYYY-MM-DD HH:MM:SS`` and study dates ``YYYY-MM-DD`` (spreadsheets read both as
dates); probabilities have up to 6 decimals with a dot. Use ``delimiter=";"`` for Excel in locales
whose list separator is a semicolon.

Columns that are left out are absent from the header, not blank: the file states what it holds.
Cells that a spreadsheet would read as a formula (starting with ``= + - @``, tab or carriage
return) get a leading apostrophe. Demo-model results read ``DEMO - not a diagnosis: <label>``.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pneumoview.atomic import atomic_open
from pneumoview.errors import ExportError
from pneumoview.labels import DEMO_MARK, display_label

__all__ = [
    "COLUMNS",
    "DEMO_MARK",
    "ExportOptions",
    "ExportSummary",
    "ReportRow",
    "columns_for",
    "export_csv",
    "pseudonym",
]

#: (field of ReportRow or computed, header text), in file order.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("patient_id", "Patient ID"),
    ("patient_name", "Patient name"),
    ("study_uid", "Study UID"),
    ("accession", "Accession number"),
    ("study_date", "Study date"),
    ("view", "View"),
    ("source_path", "Source path"),
    ("probability", "Probability of pneumoconiosis"),
    ("threshold", "Threshold"),
    ("label", "Label"),
    ("model_name", "Model name"),
    ("model_version", "Model version"),
    ("model_fingerprint", "Model fingerprint"),
    ("decision", "Reviewer decision"),
    ("comment", "Reviewer comment"),
    ("reviewer", "Reviewer name"),
    ("analysed_at", "Analysed at (UTC)"),
    ("reviewed_at", "Reviewed at (UTC)"),
    ("unsupported_reason", "Unsupported reason"),
)

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class ReportRow:
    """One analysed image with its latest result and latest reviewer decision (empty strings if none)."""

    image_key: str
    patient_id: str = ""
    patient_name: str = ""
    study_uid: str = ""
    accession: str = ""
    study_date: str = ""  # DICOM DA (YYYYMMDD) as stored; exported as YYYY-MM-DD
    view: str = ""  # ViewPosition (0018,5101)
    source_path: str = ""
    probability: float | None = None
    threshold: float | None = None
    label: str = ""
    demo: bool = False
    model_id: str = ""
    model_name: str = ""
    model_version: str = ""
    model_fingerprint: str = ""
    decision: str = ""
    comment: str = ""
    reviewer: str = ""
    analysed_at: str = ""
    reviewed_at: str = ""
    unsupported_code: str = ""
    unsupported_reason: str = ""


@dataclass(frozen=True)
class ExportOptions:
    pseudonymise: bool = False
    key: bytes | None = None  # required when pseudonymise (see settings.ensure_pseudonymise_key)
    include_names: bool = False
    include_source_path: bool = True
    delimiter: str = ","


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    rows: int
    columns: tuple[str, ...]  # header texts written


def pseudonym(key: bytes, value: str, *, kind: str = "patient") -> str:
    """Keyed hash of an identifier: ``P-`` + first 16 hex digits of HMAC-SHA256(key, kind:value).

    ``kind`` separates the domains (patient / study / accession) so equal strings in different
    fields do not share a pseudonym. Empty values stay empty.
    """
    if not value:
        return ""
    digest = hmac.new(key, f"{kind}:{value}".encode("utf-8"), hashlib.sha256).hexdigest()
    return f"{kind[0].upper()}-{digest[:16]}"


def columns_for(options: ExportOptions) -> tuple[tuple[str, str], ...]:
    """The (field, header) pairs an export with these options writes."""
    dropped = set()
    if options.pseudonymise or not options.include_names:
        dropped.add("patient_name")
    if options.pseudonymise or not options.include_source_path:
        dropped.add("source_path")
    if options.pseudonymise:
        dropped.add("comment")
    return tuple(c for c in COLUMNS if c[0] not in dropped)


def _format_date(value: str) -> str:
    """DICOM DA ``YYYYMMDD`` -> ISO ``YYYY-MM-DD``; anything else unchanged."""
    v = value.strip()
    if len(v) == 8 and v.isdigit():
        return f"{v[:4]}-{v[4:6]}-{v[6:]}"
    return v


def _format_number(value: float | None) -> str:
    """Up to 6 decimals, no trailing zeros: 0.5 -> ``0.5``, 0.8312345 -> ``0.831235``."""
    if value is None:
        return ""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text or "0"


def _format_time(value: str) -> str:
    """Stored ISO 8601 UTC (``2026-11-27T21:10:09.710665Z``) -> ``2026-11-27 21:10:09`` (Excel reads it as a date)."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _format_person_name(value: str) -> str:
    """DICOM PN ``Family^Given^Middle^Prefix^Suffix`` -> ``Family Given Middle Prefix Suffix``."""
    first_group = value.split("=")[0]  # alphabetic representation only
    return " ".join(part.strip() for part in first_group.split("^") if part.strip())


def guard_formula(cell: str) -> str:
    """Prefix an apostrophe to text a spreadsheet would evaluate as a formula."""
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell


def _cells(row: ReportRow, columns: Sequence[tuple[str, str]], options: ExportOptions) -> list[str]:
    key = options.key or b""
    cells: list[str] = []
    for name, _header in columns:
        if name == "patient_id":
            cell = pseudonym(key, row.patient_id, kind="patient") if options.pseudonymise else row.patient_id
        elif name == "study_uid":
            cell = pseudonym(key, row.study_uid, kind="study") if options.pseudonymise else row.study_uid
        elif name == "accession":
            cell = pseudonym(key, row.accession, kind="accession") if options.pseudonymise else row.accession
        elif name == "study_date":
            cell = _format_date(row.study_date)
        elif name == "patient_name":
            cell = _format_person_name(row.patient_name)
        elif name in ("analysed_at", "reviewed_at"):
            cell = _format_time(getattr(row, name)) if getattr(row, name) else ""
        elif name == "probability":
            cell = _format_number(row.probability)
        elif name == "threshold":
            cell = _format_number(row.threshold)
        elif name == "label":
            cell = display_label(row.label, demo=row.demo) if (row.label or row.demo) else ""
        elif name == "unsupported_reason":
            reason = row.unsupported_reason
            cell = f"{row.unsupported_code}: {reason}" if row.unsupported_code and reason else (reason or row.unsupported_code)
        else:
            cell = str(getattr(row, name))
        cells.append(guard_formula(cell))
    return cells


def export_csv(
    path: str | os.PathLike[str], rows: Iterable[ReportRow], options: ExportOptions | None = None
) -> ExportSummary:
    """Write ``rows`` to ``path`` (CSV, header row, UTF-8 with BOM, CRLF) atomically.

    The file appears complete or not at all; an existing file is replaced only on success.
    Raises ExportError (bad options, unwritable folder).
    """
    options = options or ExportOptions()
    target = Path(path)
    if options.pseudonymise and not options.key:
        raise ExportError("pseudonymised export needs a secret key", path=target)
    if options.delimiter not in (",", ";", "\t"):
        raise ExportError(f"unsupported CSV delimiter {options.delimiter!r}", path=target)
    if not target.parent.is_dir():
        raise ExportError("the folder does not exist", path=target.parent)
    columns = columns_for(options)
    count = 0
    try:
        with atomic_open(target, "w", encoding="utf-8-sig", newline="") as handle:
            writer = csv.writer(handle, delimiter=options.delimiter, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
            writer.writerow([header for _name, header in columns])
            for row in rows:
                writer.writerow(_cells(row, columns, options))
                count += 1
    except OSError as exc:
        raise ExportError(f"cannot write the report: {exc.strerror or exc}", path=target) from exc
    return ExportSummary(path=target, rows=count, columns=tuple(h for _n, h in columns))
