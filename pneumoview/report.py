"""The one CSV schema: app export and ``pneumoview analyze`` write the same columns, written atomically.

Rows (:class:`ReportRow`) come from :meth:`pneumoview.store.ResultStore.report_rows` (the app) or
from ``pneumoview analyze`` (one per file found). :data:`COLUMNS` is the documented column list, in
file order; the header row holds these names. What a file holds is decided by :class:`ExportOptions`:

* ``include_names`` (default off): keeps ``patient_name`` (DICOM ``^`` separators become spaces).
* ``include_source_path`` (default on): keeps ``path`` and ``duplicate_uid``'s paths.
* ``pseudonymise``: ``patient_id``, ``study_uid`` and ``accession`` are replaced by keyed hashes
  (HMAC-SHA256 with the user's secret key, first 16 hex digits, prefixed ``P-``, ``S-``, ``A-``),
  so rows of one patient can still be grouped but not traced back without the key. Patient names,
  paths (folder and file names often carry names), the SOP Instance UID and the reviewers' comments
  are left out whatever the other options say (``duplicate_uid`` then gives only the count of the
  other files). Study dates, the view and all model/review fields stay.

Columns that are left out are absent from the header, not blank: the file states what it holds.

File names are written losslessly: a byte of a file name that is not UTF-8 is written as that same
byte (Python's ``surrogateescape``), so the path cell holds the name exactly as the file system
does; every other cell is UTF-8. Times are UTC as ``YYYY-MM-DD HH:MM:SS`` and study dates
``YYYY-MM-DD``; probabilities have up to 6 decimals with a dot. Cells a spreadsheet would read as a
formula (starting with ``= + - @``, tab or carriage return) get a leading apostrophe. Labels of the
demo model read ``DEMO - not a diagnosis: <label>`` (:func:`pneumoview.labels.display_label`).
``quality_codes`` / ``below_quality_gate`` carry the image-quality gate's verdict, given before the model
ran (:func:`pneumoview.dicom.quality.gate`): a result on an image below the gate is written and marked,
never left out.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pneumoview.atomic import atomic_open
from pneumoview.clock import parse_utc
from pneumoview.errors import ExportError
from pneumoview.labels import DEMO_MARK
from pneumoview.results import REASON_DUPLICATE_UID, ImageResult

__all__ = [
    "COLUMNS",
    "DEMO_MARK",
    "ExportOptions",
    "ExportSummary",
    "ReportRow",
    "column_names",
    "columns_for",
    "export_csv",
    "pseudonym",
]

#: The CSV schema: (column name = header text, meaning), in file order.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("path", "the file (as the file system names it)"),
    ("status", "analysed | not-analysed | failed | unreadable"),
    ("reason_code", "why not analysed / failed (e.g. lateral-view, non-finite-output)"),
    ("reason", "the same in words"),
    ("duplicate_uid", "'duplicate-uid: <other paths>' when other files carry this SOP Instance UID with other bytes"),
    ("probability", "P(pneumoconiosis), 0..1"),
    ("threshold", "the operating threshold the label was given at"),
    ("label", "class at the threshold (DEMO-marked for the demo model)"),
    ("demo", "yes: random demo model, not a diagnosis"),
    ("model_name", "bundle name"),
    ("model_id", "bundle id (manifest model_id)"),
    ("model_fingerprint", "SHA-256 of the bundle's weights"),
    ("base_fingerprints", "SHA-256 of the base weights, name=digest separated by spaces"),
    ("operating_point", "operating-point id (empty: threshold from settings or the command line)"),
    ("software_version", "PneumoView version"),
    ("device_plan", "device and precision plan"),
    ("preprocessing", "the bundle's preprocessing (JSON)"),
    ("lung_box", "lung crop x0 y0 x1 y1 in image pixels"),
    ("lung_fallback", "yes: no lungs found, the whole image was used"),
    (
        "quality_codes",
        "image-quality gate's reason codes, ';'-separated (pneumoview/dicom/quality.py, e.g. pixel-spacing-coarse;"
        "lungs-cut-off); empty: passed, or the gate did not run",
    ),
    (
        "below_quality_gate",
        "yes: the image is below the quality gate (the result is kept but marked); no: passed; empty: not graded",
    ),
    ("patient_id", "(0010,0020), or its pseudonym"),
    ("patient_name", "(0010,0010), only when asked"),
    ("study_uid", "(0020,000D), or its pseudonym"),
    ("accession", "(0008,0050), or its pseudonym"),
    ("study_date", "(0008,0020) as YYYY-MM-DD"),
    ("series_uid", "(0020,000E)"),
    ("sop_instance_uid", "(0008,0018)"),
    ("content_sha256", "SHA-256 of the file's bytes (with the UID: the image's identity)"),
    ("modality", "(0008,0060)"),
    ("view_position", "(0018,5101)"),
    ("body_part", "(0018,0015)"),
    ("decision", "reviewer's decision: agree | disagree | uncertain"),
    ("review_status", "current | needs re-review (the result changed since the decision)"),
    ("comment", "reviewer's comment"),
    ("reviewer", "reviewer's name"),
    ("analysed_at", "UTC"),
    ("reviewed_at", "UTC"),
    ("notes", "cautions and preprocessing notes"),
)

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PSEUDONYMISED_DROP = frozenset({"patient_name", "path", "comment", "sop_instance_uid", "series_uid"})


def column_names() -> tuple[str, ...]:
    return tuple(name for name, _meaning in COLUMNS)


#: Header fields of a scan's ImageRecord that both an image's store row and its report row carry.
HEADER_FIELDS = (
    "patient_id",
    "patient_name",
    "study_uid",
    "study_date",
    "accession",
    "view_position",
    "series_uid",
    "modality",
    "body_part",
)


def header_text(record: object | None) -> dict[str, str]:
    """:data:`HEADER_FIELDS` of ``record`` as text: "" where the record, or an attribute, is absent or None."""
    values = {name: getattr(record, name, "") if record is not None else "" for name in HEADER_FIELDS}
    return {name: "" if value is None else str(value) for name, value in values.items()}


@dataclass(frozen=True)
class ReportRow:
    """One file: its header fields, its latest result (or a status and reason without one) and the latest
    reviewer decision (empty strings if none)."""

    path: str
    result: ImageResult | None = None
    status: str = ""  # when there is no result (e.g. unreadable): its status, reason code and reason
    reason_code: str = ""
    reason: str = ""
    patient_id: str = ""
    patient_name: str = ""
    study_uid: str = ""
    accession: str = ""
    study_date: str = ""  # DICOM DA (YYYYMMDD) as stored; exported as YYYY-MM-DD
    series_uid: str = ""
    sop_instance_uid: str = ""
    content_sha256: str = ""
    modality: str = ""
    view_position: str = ""  # ViewPosition (0018,5101)
    body_part: str = ""
    decision: str = ""
    comment: str = ""
    reviewer: str = ""
    reviewed_at: str = ""
    review_status: str = ""
    duplicates: tuple[str, ...] = ()  # other files with this SOP Instance UID and other bytes
    notes: tuple[str, ...] = ()


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
    digest = hmac.new(key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()
    return f"{kind[0].upper()}-{digest[:16]}"


def columns_for(options: ExportOptions) -> tuple[str, ...]:
    """The column names an export with these options writes (a subset of :data:`COLUMNS`, same order)."""
    dropped: set[str] = set()
    if options.pseudonymise:
        dropped |= _PSEUDONYMISED_DROP
    if not options.include_names:
        dropped.add("patient_name")
    if not options.include_source_path:
        dropped.add("path")
    return tuple(name for name in column_names() if name not in dropped)


def format_date(value: str) -> str:
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
        return parse_utc(value).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return value


def _format_person_name(value: str) -> str:
    """DICOM PN ``Family^Given^Middle^Prefix^Suffix`` -> ``Family Given Middle Prefix Suffix``."""
    first_group = value.split("=")[0]  # alphabetic representation only
    return " ".join(part.strip() for part in first_group.split("^") if part.strip())


def guard_formula(cell: str) -> str:
    """Prefix an apostrophe to text a spreadsheet would evaluate as a formula."""
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell


def _result_cells(result: ImageResult | None) -> dict[str, str]:
    if result is None:
        return {}
    prov = result.provenance
    box = prov.crop_box
    analysed = result.is_analysed
    return {
        "status": result.status,
        "reason_code": result.reason_code,
        "reason": result.reason,
        "probability": _format_number(result.probability),
        "threshold": _format_number(prov.threshold),
        "label": result.shown_label,
        "demo": "yes" if result.demo else "no",
        "model_name": prov.bundle_name,
        "model_id": prov.bundle_id,
        "model_fingerprint": prov.bundle_fingerprint,
        "base_fingerprints": " ".join(f"{k}={v}" for k, v in sorted(prov.base_fingerprints.items())),
        "operating_point": prov.operating_point_id,
        "software_version": prov.software_version,
        "device_plan": prov.plan or prov.device,
        "preprocessing": json.dumps(prov.preprocessing, sort_keys=True) if prov.preprocessing else "",
        "lung_box": " ".join(str(v) for v in box) if box else "",
        "lung_fallback": ("yes" if prov.crop_fallback else "no") if analysed else "",
        "quality_codes": result.quality_text,
        "below_quality_gate": {True: "yes", False: "no", None: ""}[result.below_quality_gate],
        "analysed_at": _format_time(result.analysed_at) if result.analysed_at else "",
    }


def _cells(row: ReportRow, columns: Sequence[str], options: ExportOptions) -> list[str]:
    key = options.key or b""
    values: dict[str, str] = {
        "path": row.path,
        "status": row.status,
        "reason_code": row.reason_code,
        "reason": row.reason,
        "patient_name": _format_person_name(row.patient_name),
        "study_date": format_date(row.study_date),
        "series_uid": row.series_uid,
        "sop_instance_uid": row.sop_instance_uid,
        "content_sha256": row.content_sha256,
        "modality": row.modality,
        "view_position": row.view_position,
        "body_part": row.body_part,
        "decision": row.decision,
        "review_status": row.review_status,
        "comment": row.comment,
        "reviewer": row.reviewer,
        "reviewed_at": _format_time(row.reviewed_at) if row.reviewed_at else "",
        "notes": "; ".join(n for n in (*(row.result.notes if row.result else ()), *row.notes) if n),
    }
    values.update(_result_cells(row.result))
    if options.pseudonymise:
        values["patient_id"] = pseudonym(key, row.patient_id, kind="patient")
        values["study_uid"] = pseudonym(key, row.study_uid, kind="study")
        values["accession"] = pseudonym(key, row.accession, kind="accession")
    else:
        values.update(patient_id=row.patient_id, study_uid=row.study_uid, accession=row.accession)
    if row.duplicates:
        shown = options.include_source_path and not options.pseudonymise
        values["duplicate_uid"] = (
            f"{REASON_DUPLICATE_UID}: " + "; ".join(row.duplicates)
            if shown
            else f"{REASON_DUPLICATE_UID} ({len(row.duplicates)} other file(s))"
        )
    return [guard_formula(values.get(name, "")) for name in columns]


def export_csv(
    path: str | os.PathLike[str], rows: Iterable[ReportRow], options: ExportOptions | None = None
) -> ExportSummary:
    """Write ``rows`` to ``path`` (CSV, header row, UTF-8 with BOM, CRLF) atomically.

    The file appears complete or not at all; an existing file is replaced only on success.
    Raises ExportError (bad options, a folder or unwritable place, a full disk).
    """
    options = options or ExportOptions()
    target = Path(path)
    check_target(target)
    if options.pseudonymise and not options.key:
        raise ExportError("pseudonymised export needs a secret key", path=target)
    if options.delimiter not in (",", ";", "\t"):
        raise ExportError(f"unsupported CSV delimiter {options.delimiter!r}", path=target)
    columns = columns_for(options)
    count = 0
    try:
        with atomic_open(target, "wb") as raw:
            # surrogateescape: a file name's non-UTF-8 bytes are written back as the same bytes.
            handle = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
            writer = csv.writer(handle, delimiter=options.delimiter, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
            writer.writerow(columns)
            for row in rows:
                writer.writerow(_cells(row, columns, options))
                count += 1
            handle.flush()
            handle.detach()
    except OSError as exc:
        raise ExportError(_os_reason("cannot write the report", exc), path=target) from exc
    return ExportSummary(path=target, rows=count, columns=columns)


def _os_reason(what: str, exc: OSError) -> str:
    import errno

    if exc.errno == errno.ENOSPC:
        return f"disk full: {what}"
    return f"{what}: {exc.strerror or exc}"


def check_target(target: Path) -> None:
    """Refuse, before any work, a report path that is a folder, in a missing folder, or not writable."""
    if target.is_dir():
        raise ExportError("the report path is a folder, not a file", path=target)
    parent = target.absolute().parent
    if not parent.is_dir():
        raise ExportError("the folder does not exist", path=parent)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError("cannot write in this folder (permission denied)", path=parent)
    if target.exists() and not os.access(target, os.W_OK):
        raise ExportError("the report file exists and is read-only", path=target)
