"""A printable one-page PDF per study: the worker, each reader's ILO classification, the AI
suggestion and the final determination (matplotlib's PDF backend, no Qt, A4 portrait).

With ``pseudonymise`` the worker is shown by the keyed hash of the patient ID only (see
:func:`pneumoview.report.pseudonym`), the Study Instance UID by its hash, and free text
(comments, film quality reasons) is left out. The file is written atomically.
"""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

from matplotlib.backends.backend_pdf import FigureCanvasPdf
from matplotlib.figure import Figure

from pneumoview import __version__
from pneumoview.atomic import atomic_open
from pneumoview.errors import ExportError
from pneumoview.reading.export import reading_cells
from pneumoview.reading.ilo import FILM_QUALITY, SYMBOLS, Reading
from pneumoview.reading.repository import ReadingRepository
from pneumoview.reading.rules import latest_per_reader
from pneumoview.report import _format_person_name, format_date, pseudonym
from pneumoview.store import utc_now

A4_INCHES = (8.27, 11.69)
NOT_A_DEVICE = "Research software - not a medical device. The AI result is a suggestion, never a diagnosis."


def study_report_lines(
    repo: ReadingRepository, study_uid: str, *, pseudonymise: bool = False, key: bytes | None = None
) -> list[tuple[str, str]]:
    """The page as (style, text) lines; style is ``title``, ``head`` or ``text``."""
    images = repo.study_images(study_uid)
    first = images[0] if images else None
    if pseudonymise:
        if not key:
            raise ExportError("a pseudonymised report needs a secret key")
        worker = f"Worker {pseudonym(key, first.patient_id, kind='patient') if first else ''}"
        study = pseudonym(key, study_uid, kind="study")
    else:
        name = _format_person_name(first.patient_name) if first else ""
        worker = f"Worker {name} (ID {first.patient_id if first else ''})"
        study = study_uid
    lines: list[tuple[str, str]] = [
        ("title", "ILO classification of a chest radiograph (ILO 2022)"),
        ("text", worker),
        ("text", f"Study {study}   date {format_date(first.study_date) if first else ''}"),
    ]
    ai = repo.ai_suggestion(study_uid)
    lines.append(("text", ai.text() if ai else "AI: no result for this study"))
    lines.append(("head", f"Final determination: {repo.final(study_uid).text()}"))
    for sub in latest_per_reader(repo.readings_for(study_uid)):
        lines.extend(_reader_lines(sub.reader, sub.submitted_at, sub.reading, pseudonymise))
    return lines


def _reader_lines(reader: str, when: str, reading: Reading, pseudonymise: bool) -> list[tuple[str, str]]:
    c = reading_cells(reading)
    out = [("head", f"Reader {reader} - submitted {when[:19].replace('T', ' ')} UTC")]
    quality = f"Film quality {reading.film_quality} ({FILM_QUALITY.get(reading.film_quality, '?')})"
    if reading.film_quality_reason and not pseudonymise:
        quality += f": {reading.film_quality_reason}"
    out.append(("text", quality))
    if reading.classified:
        shapes = f"{c['primary_shape']}/{c['secondary_shape']}" if c["primary_shape"] else "-"
        zones = c["zones"] or "-"
        parenchyma = (
            f"Small opacities {c['small_opacities']}; shape/size {shapes}; zones {zones}; "
            f"profusion {c['profusion']}; large opacities {c['large_opacities']}"
        )
        out.append(("text", parenchyma))
        out.append(("text", f"Pleural abnormalities {c['pleural_abnormalities']}"))
        for label, key in (
            ("plaques", "plaques"),
            ("costophrenic angle obliterated", "costophrenic_obliteration"),
            ("diffuse thickening", "diffuse_thickening"),
        ):
            if c[key]:
                out.append(("text", f"  {label}: {c[key]}"))
        symbols = ", ".join(f"{s} ({SYMBOLS[s]})" for s in c["symbols"].split())
        out.append(("text", f"Symbols: {symbols or 'none'}"))
    if reading.comments and not pseudonymise:
        out.append(("text", f"Comments: {reading.comments}"))
    return out


def write_study_pdf(
    path: str | os.PathLike[str],
    repo: ReadingRepository,
    study_uid: str,
    *,
    pseudonymise: bool = False,
    key: bytes | None = None,
) -> Path:
    """Render the study's page to ``path`` (one A4 page; long text is wrapped, overflow cut)."""
    target = Path(path)
    if not target.parent.is_dir():
        raise ExportError("the folder does not exist", path=target.parent)
    lines = study_report_lines(repo, study_uid, pseudonymise=pseudonymise, key=key)
    figure = Figure(figsize=A4_INCHES)
    FigureCanvasPdf(figure)
    y = 0.96
    sizes = {"title": 14, "head": 11, "text": 9}
    for style, text in lines:
        for part in textwrap.wrap(text, width=95 if style == "text" else 80) or [""]:
            if y < 0.06:
                break
            if style == "head":
                y -= 0.012
            figure.text(
                0.06,
                y,
                part,
                fontsize=sizes[style],
                weight="bold" if style != "text" else "normal",
                va="top",
                family="DejaVu Sans",
            )
            y -= 0.022 if style == "text" else 0.03
    figure.text(0.06, 0.03, NOT_A_DEVICE, fontsize=7, va="bottom", style="italic")
    figure.text(
        0.94,
        0.03,
        f"PneumoView {__version__} - {utc_now()[:19].replace('T', ' ')} UTC",
        fontsize=7,
        va="bottom",
        ha="right",
    )
    metadata = {"Title": "ILO classification report", "Creator": f"PneumoView {__version__}"}
    try:
        with atomic_open(target, "wb") as handle:
            figure.savefig(handle, format="pdf", metadata=metadata)
    except OSError as exc:
        raise ExportError(f"cannot write the PDF: {exc.strerror or exc}", path=target) from exc
    return target


def write_study_pdfs(
    folder: str | os.PathLike[str], repo: ReadingRepository, *, pseudonymise: bool = False, key: bytes | None = None
) -> list[Path]:
    """One page per study that has readings, named ``<Study Instance UID>.pdf`` (its keyed hash
    when pseudonymised; characters other than letters, digits, ``. _ -`` become ``_``)."""
    root = Path(folder)
    if not root.is_dir():
        raise ExportError("the PDF folder does not exist", path=root)
    if pseudonymise and not key:
        raise ExportError("a pseudonymised report needs a secret key", path=root)
    written = []
    for study_uid in sorted(repo.by_study()):
        name = pseudonym(key, study_uid, kind="study") if pseudonymise and key else study_uid
        safe = re.sub(r"[^0-9A-Za-z._-]", "_", name)
        written.append(write_study_pdf(root / f"{safe}.pdf", repo, study_uid, pseudonymise=pseudonymise, key=key))
    return written
