"""The hash-chained audit log: canonical entry bytes, SHA-256 chaining, verification, CSV export.

Every row of the store's ``audit_events`` table carries ``prev_hash`` (the previous entry's
``entry_hash``; 64 zeros for the first) and ``entry_hash`` = SHA-256 of :func:`canonical_bytes`
(format tag, id, time, kind, image key, actor, the detail JSON exactly as stored, prev_hash).
Editing any stored field changes that entry's hash; removing an entry breaks the next one's link
or, at the end, leaves a gap below SQLite's AUTOINCREMENT counter (``sqlite_sequence``), which
never goes back. Triggers refuse UPDATE and DELETE on the table, so only a deliberate edit of the
file (dropping them first) can change it -- and :func:`verify` says so.

What it cannot catch on its own: someone who rewrites the whole chain *and* the counter with the
same code. Keeping an exported copy (``pneumoview audit export``) elsewhere anchors it.

This module knows SQL rows and hashes only; :mod:`pneumoview.store` calls :func:`append` inside
its write transactions.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: Part of every hashed entry; change it (and migrate) if the canonical form ever changes.
CHAIN_FORMAT = "pneumoview-audit-1"
GENESIS = "0" * 64
#: Triggers that make the table append-only (created by the store's migration).
GUARD_TRIGGERS = ("audit_events_no_update", "audit_events_no_delete")
GUARD_STATEMENTS = (
    (
        "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events "
        "BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END"
    ),
    (
        "CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events "
        "BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END"
    ),
)
#: Event kinds written by PneumoView (others may be added; the chain does not depend on them).
MODEL_ACTIVATED = "model-activated"
OPERATING_POINT_CHANGED = "operating-point-changed"
EXPORT = "export"
DECISION_SAVED = "decision-saved"
RESULT_SAVED = "result-saved"
READING_SAVED = "reading-saved"

CSV_COLUMNS = ("id", "at", "kind", "image_key", "actor", "detail", "prev_hash", "entry_hash")


@dataclass(frozen=True)
class ChainEntry:
    """One stored row, as hashed."""

    id: int
    at: str
    kind: str
    image_key: str | None
    actor: str
    detail: str  # the JSON text exactly as stored
    prev_hash: str
    entry_hash: str

    @classmethod
    def from_row(cls, row: sqlite3.Row | Sequence[Any]) -> ChainEntry:
        return cls(
            int(row[0]),
            str(row[1]),
            str(row[2]),
            None if row[3] is None else str(row[3]),
            str(row[4]),
            str(row[5]),
            str(row[6]),
            str(row[7]),
        )


def canonical_bytes(
    entry_id: int, at: str, kind: str, image_key: str | None, actor: str, detail: str, prev_hash: str
) -> bytes:
    """The bytes hashed for an entry: a compact JSON array (UTF-8), fields in a fixed order."""
    return json.dumps(
        [CHAIN_FORMAT, int(entry_id), at, kind, image_key, actor, detail, prev_hash],
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")


def entry_hash(
    entry_id: int, at: str, kind: str, image_key: str | None, actor: str, detail: str, prev_hash: str
) -> str:
    return hashlib.sha256(canonical_bytes(entry_id, at, kind, image_key, actor, detail, prev_hash)).hexdigest()


def _sequence(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit_events'").fetchone()
    return int(row[0]) if row else 0


def append(
    conn: sqlite3.Connection, at: str, kind: str, image_key: str | None, actor: str, detail: dict[str, Any]
) -> int:
    """Add one chained entry; the caller holds a write transaction (BEGIN IMMEDIATE). Returns its id."""
    last = conn.execute("SELECT id, entry_hash FROM audit_events ORDER BY id DESC LIMIT 1").fetchone()
    prev = str(last[1]) if last else GENESIS
    new_id = max(int(last[0]) if last else 0, _sequence(conn)) + 1
    text = json.dumps(detail, sort_keys=True, ensure_ascii=False)
    digest = entry_hash(new_id, at, kind, image_key, actor, text, prev)
    conn.execute(
        "INSERT INTO audit_events (id, at, kind, image_key, actor, detail, prev_hash, entry_hash) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (new_id, at, kind, image_key, actor, text, prev, digest),
    )
    return new_id


def seal_existing(conn: sqlite3.Connection) -> int:
    """Chain the entries written before the log was chained (schema migration; runs before the
    guard triggers exist). Returns how many were sealed; they are trusted as they are at that moment."""
    prev = GENESIS
    count = 0
    for row in conn.execute("SELECT id, at, kind, image_key, actor, detail FROM audit_events ORDER BY id").fetchall():
        digest = entry_hash(row[0], row[1], row[2], row[3], row[4], row[5], prev)
        conn.execute("UPDATE audit_events SET prev_hash = ?, entry_hash = ? WHERE id = ?", (prev, digest, row[0]))
        prev = digest
        count += 1
    return count


def read_chain(conn: sqlite3.Connection) -> tuple[list[ChainEntry], int, set[str]]:
    """Every entry (by id), the AUTOINCREMENT counter, and which guard triggers exist."""
    rows = conn.execute(
        "SELECT id, at, kind, image_key, actor, detail, prev_hash, entry_hash FROM audit_events ORDER BY id"
    ).fetchall()
    triggers = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    return [ChainEntry.from_row(r) for r in rows], _sequence(conn), triggers & set(GUARD_TRIGGERS)


@dataclass(frozen=True)
class Verification:
    """The outcome of :func:`verify`: ``ok``, or the first bad entry and why."""

    ok: bool
    entries: int
    first_bad: int | None = None
    reason: str = ""

    @property
    def message(self) -> str:
        if self.ok:
            return f"audit log intact: {self.entries} entries"
        where = f"entry {self.first_bad}: " if self.first_bad is not None else ""
        return f"audit log broken at {where}{self.reason}"


def verify(entries: Sequence[ChainEntry], sequence: int, guards: set[str] | None = None) -> Verification:
    """Check ids (1, 2, ... with no gap, up to ``sequence``), each link and each hash, in order."""
    prev = GENESIS
    expected = 1
    for entry in entries:
        if entry.id != expected:
            gap = f"{expected}" if entry.id == expected + 1 else f"{expected}-{entry.id - 1}"
            return Verification(False, len(entries), expected, f"missing (entries {gap} were removed)")
        if entry.prev_hash != prev:
            return Verification(
                False,
                len(entries),
                entry.id,
                f"does not chain to entry {entry.id - 1} (that entry or this link was edited)",
            )
        digest = entry_hash(entry.id, entry.at, entry.kind, entry.image_key, entry.actor, entry.detail, entry.prev_hash)
        if digest != entry.entry_hash:
            return Verification(False, len(entries), entry.id, "edited (its contents do not match its hash)")
        prev = entry.entry_hash
        expected += 1
    if sequence > expected - 1:
        gap = f"{expected}" if sequence == expected else f"{expected}-{sequence}"
        return Verification(False, len(entries), expected, f"missing (entries {gap} were removed from the end)")
    if guards is not None and set(GUARD_TRIGGERS) - guards:
        missing = ", ".join(sorted(set(GUARD_TRIGGERS) - guards))
        return Verification(False, len(entries), None, f"the append-only guard was removed ({missing})")
    return Verification(True, len(entries))


def export_csv(entries: Sequence[ChainEntry], path: str | os.PathLike[str]) -> int:
    """Write the entries as CSV (UTF-8 with BOM, header row, formula-guarded text), atomically."""
    from pneumoview.atomic import atomic_open
    from pneumoview.report import guard_formula

    with atomic_open(path, "w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for e in entries:
            writer.writerow(
                [
                    e.id,
                    e.at,
                    guard_formula(e.kind),
                    guard_formula(e.image_key or ""),
                    guard_formula(e.actor),
                    guard_formula(e.detail),
                    e.prev_hash,
                    e.entry_hash,
                ]
            )
    return len(entries)
