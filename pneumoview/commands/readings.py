"""``pneumoview readings export --csv OUT [--pseudonymise] [--pdf DIR]``: ILO readings out of the database.

``--csv`` writes one row per submitted reading (ILO columns, the AI result the reader saw, the
study's final determination; see :mod:`pneumoview.reading.export`). ``--pdf DIR`` also writes a
printable one-page PDF per study into DIR (``<study>.pdf``; the study's hash when pseudonymised).
``--rule RULE.json`` sets the final-determination rule (:class:`pneumoview.reading.rules.FinalRule`).
``--pseudonymise`` uses the secret key in the settings (created on first use). Exit status 0, or
2 with one line when the database or the output cannot be used.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pneumoview.errors import ExportError


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    export = sub.add_parser("export", help="write the readings as CSV (and PDF pages)")
    export.add_argument("--csv", required=True, type=Path, metavar="OUT.csv", help="CSV file to write")
    export.add_argument("--pdf", type=Path, metavar="DIR", help="also write one PDF page per study into DIR")
    export.add_argument(
        "--pseudonymise",
        action="store_true",
        help="keyed hashes for patient ID and study UID; free-text columns left out",
    )
    export.add_argument("--database", type=Path, metavar="FILE", help="results database (default: the app's)")
    export.add_argument(
        "--rule",
        type=Path,
        metavar="RULE.json",
        help='final-determination rule, e.g. {"agree_on": "major", "large_opacities": true} '
        "(default: two readers agree on 0 vs 1/2/3 and on large opacities)",
    )


def run(args: argparse.Namespace) -> int:
    from pneumoview.reading.export import export_readings_csv
    from pneumoview.reading.pdf import write_study_pdfs
    from pneumoview.reading.repository import ReadingRepository
    from pneumoview.reading.rules import load_final_rule
    from pneumoview.settings import ensure_pseudonymise_key, load_settings
    from pneumoview.store import ResultStore

    if args.database is not None and not args.database.is_file():
        raise ExportError("no such results database", path=args.database)
    rule = load_final_rule(args.rule) if args.rule is not None else None
    key = ensure_pseudonymise_key(load_settings()) if args.pseudonymise else None
    with ResultStore(args.database) as store:
        repo = ReadingRepository(store, rule)
        if args.pdf is not None and not args.pdf.is_dir():
            raise ExportError("the PDF folder does not exist", path=args.pdf)
        summary = export_readings_csv(args.csv, repo, pseudonymise=args.pseudonymise, key=key)
        pages = len(write_study_pdfs(args.pdf, repo, pseudonymise=args.pseudonymise, key=key)) if args.pdf else 0
        store.audit(
            "readings-exported",
            detail={"rows": summary.rows, "pdf_pages": pages, "pseudonymised": bool(args.pseudonymise)},
        )
    print(
        f"{summary.rows} reading(s) written to {summary.path}"
        + (f", {pages} PDF page(s) to {args.pdf}" if pages else ""),
        file=sys.stderr,
    )
    return 0
