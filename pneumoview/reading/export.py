"""ILO readings as CSV rows: one row per submitted reading, with the AI result the reader saw and
the study's final determination.

The file follows :mod:`pneumoview.report`'s conventions and reuses its helpers: UTF-8 with BOM,
CRLF, written atomically, formula guard on every cell, and with ``pseudonymise`` the keyed
hashes of :func:`pneumoview.report.pseudonym` for the patient ID and the Study Instance UID; the
free-text columns (``film_quality_reason``, ``comments``: they may name the worker) are then left
out of the header. Patient names are never written. Reader names are staff names and stay.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pneumoview.atomic import atomic_open
from pneumoview.errors import ExportError
from pneumoview.labels import display_label
from pneumoview.reading.ilo import ZONES, Reading
from pneumoview.reading.repository import ReadingRepository
from pneumoview.reading.rules import FinalDetermination, SubmittedReading
from pneumoview.report import _format_number, _format_time, format_date, guard_formula, pseudonym

#: Column names, in file order.
COLUMNS: tuple[str, ...] = (
    "study_uid",
    "patient_id",
    "study_date",
    "reader",
    "submitted_at",
    "film_quality",
    "film_quality_reason",
    "small_opacities",
    "primary_shape",
    "secondary_shape",
    "zones",
    "profusion",
    "large_opacities",
    "pleural_abnormalities",
    "plaques",
    "costophrenic_obliteration",
    "diffuse_thickening",
    "symbols",
    "comments",
    "ai_probability",
    "ai_threshold",
    "ai_label",
    "final",
)
FREE_TEXT: tuple[str, ...] = ("film_quality_reason", "comments")


@dataclass(frozen=True)
class ReadingExportSummary:
    path: Path
    rows: int
    columns: tuple[str, ...]


def columns_for(pseudonymise: bool) -> tuple[str, ...]:
    return tuple(c for c in COLUMNS if not (pseudonymise and c in FREE_TEXT))


def reading_cells(reading: Reading) -> dict[str, str]:
    """The ILO columns of one reading (no identifiers)."""
    yes_no = {True: "yes", False: "no"}
    classified = reading.classified
    return {
        "film_quality": str(reading.film_quality),
        "film_quality_reason": reading.film_quality_reason,
        "small_opacities": yes_no[reading.small_opacities] if classified else "",
        "primary_shape": reading.primary_shape or "",
        "secondary_shape": reading.secondary_shape or "",
        "zones": " ".join(z for z in ZONES if z in reading.zones),
        "profusion": reading.profusion or "",
        "large_opacities": reading.large_opacities if classified else "",
        "pleural_abnormalities": yes_no[reading.pleural_abnormalities] if classified else "",
        "plaques": reading.plaques.summary(),
        "costophrenic_obliteration": " ".join(s for s in ("R", "L") if s in reading.costophrenic_obliteration),
        "diffuse_thickening": reading.diffuse_thickening.summary(),
        "symbols": " ".join(s for s in reading.to_json_dict()["symbols"]),
        "comments": reading.comments,
    }


def _row(
    repo: ReadingRepository, sub: SubmittedReading, final: FinalDetermination, *, key: bytes | None
) -> dict[str, str]:
    images = repo.study_images(sub.study_uid)
    patient_id = images[0].patient_id if images else ""
    study_date = images[0].study_date if images else ""
    cells = {
        "study_uid": pseudonym(key, sub.study_uid, kind="study") if key else sub.study_uid,
        "patient_id": pseudonym(key, patient_id, kind="patient") if key else patient_id,
        "study_date": format_date(study_date),
        "reader": sub.reader,
        "submitted_at": _format_time(sub.submitted_at),
        **reading_cells(sub.reading),
        "ai_probability": "",
        "ai_threshold": "",
        "ai_label": "",
        "final": final.text(),
    }
    if sub.result_id is not None:
        rows = repo.store._query(
            "SELECT probability, threshold, label, demo FROM results WHERE id = ?", (sub.result_id,)
        )
        if rows:
            r = rows[0]
            cells["ai_probability"] = _format_number(r["probability"])
            cells["ai_threshold"] = _format_number(r["threshold"])
            cells["ai_label"] = display_label(str(r["label"]), demo=bool(r["demo"]))
    return cells


def export_readings_csv(
    path: str | os.PathLike[str],
    repo: ReadingRepository,
    *,
    pseudonymise: bool = False,
    key: bytes | None = None,
    study_uids: Sequence[str] | None = None,
) -> ReadingExportSummary:
    """Write every reading (or those of ``study_uids``) to ``path``; ExportError when it cannot."""
    target = Path(path)
    if pseudonymise and not key:
        raise ExportError("pseudonymised export needs a secret key", path=target)
    if not target.parent.is_dir():
        raise ExportError("the folder does not exist", path=target.parent)
    columns = columns_for(pseudonymise)
    by_study = repo.by_study()
    wanted = sorted(by_study) if study_uids is None else [s for s in study_uids if s in by_study]
    count = 0
    try:
        with atomic_open(target, "w", encoding="utf-8-sig", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\r\n")
            writer.writerow(columns)
            for study_uid in wanted:
                final = repo.final(study_uid)
                for sub in by_study[study_uid]:
                    cells = _row(repo, sub, final, key=key if pseudonymise else None)
                    writer.writerow([guard_formula(cells[c]) for c in columns])
                    count += 1
    except OSError as exc:
        raise ExportError(f"cannot write the readings: {exc.strerror or exc}", path=target) from exc
    return ReadingExportSummary(target, count, columns)
