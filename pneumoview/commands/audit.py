"""``pneumoview audit verify`` / ``pneumoview audit export --csv OUT``: the hash-chained audit log.

``verify`` exits 0 when every entry of the results database's audit log is intact, and 1 with one
line naming the first bad entry when any stored entry was edited or removed (see
:mod:`pneumoview.audit`). ``export`` writes the log as CSV (id, time, kind, image key, actor,
detail JSON, prev_hash, entry_hash), atomically. Exit 2 with one line when the database cannot
be opened.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pneumoview.errors import ExportError, StoreError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=Path, metavar="FILE", help="results database (default: the app's)")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("verify", help="check every entry's hash and link; exit 1 naming the first bad entry")
    export = sub.add_parser("export", help="write the audit log as CSV")
    export.add_argument("--csv", required=True, type=Path, metavar="OUT.csv")


def run(args: argparse.Namespace) -> int:
    from pneumoview import audit, paths
    from pneumoview.store import ResultStore

    db = args.db or paths.database_path()
    if not db.is_file():
        raise StoreError("no results database here", path=db)
    with ResultStore(db) as store:
        entries, sequence, guards = store.audit_chain()
        if args.action == "verify":
            outcome = audit.verify(entries, sequence, guards)
            print(outcome.message, file=sys.stdout if outcome.ok else sys.stderr)
            return 0 if outcome.ok else 1
        parent = args.csv.resolve().parent
        if not parent.is_dir():
            raise ExportError("the CSV's folder does not exist", path=parent)
        try:
            count = audit.export_csv(entries, args.csv)
        except OSError as exc:
            raise ExportError(f"cannot write the CSV: {exc.strerror or exc}", path=args.csv) from exc
        store.audit(audit.EXPORT, detail={"what": "audit-log", "entries": count})
    print(f"{count} audit entries written to {args.csv}")
    return 0
