"""The results database's schema: the append-only :data:`MIGRATIONS` and :func:`migrate`.

The schema is versioned with ``PRAGMA user_version``; migration *i* takes version *i* to *i + 1*.
Opening an older database migrates it in one transaction after copying it to ``<name>.v<N>.bak``;
a newer one is refused (:class:`~pneumoview.errors.StoreError`).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

from pneumoview import audit as auditlog
from pneumoview.clock import utc_now
from pneumoview.errors import StoreError

# Append-only: never edit a released migration, add a new one. A step is SQL text or a function
# called with the connection (inside the migration's transaction).
MIGRATIONS: tuple[tuple[str | Callable[[sqlite3.Connection], object], ...], ...] = (
    # v0 -> v1: images, results, decisions
    (
        """CREATE TABLE images (
            image_key TEXT PRIMARY KEY,
            path TEXT NOT NULL,
            sop_instance_uid TEXT NOT NULL DEFAULT '',
            patient_id TEXT NOT NULL DEFAULT '',
            patient_name TEXT NOT NULL DEFAULT '',
            study_uid TEXT NOT NULL DEFAULT '',
            study_date TEXT NOT NULL DEFAULT '',
            accession TEXT NOT NULL DEFAULT '',
            view_position TEXT NOT NULL DEFAULT '',
            first_seen TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        """CREATE TABLE results (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            image_key TEXT NOT NULL REFERENCES images(image_key) ON DELETE CASCADE,
            model_id TEXT NOT NULL DEFAULT '',
            model_name TEXT NOT NULL DEFAULT '',
            model_version TEXT NOT NULL DEFAULT '',
            model_fingerprint TEXT NOT NULL DEFAULT '',
            probability REAL,
            threshold REAL,
            label TEXT NOT NULL DEFAULT '',
            demo INTEGER NOT NULL DEFAULT 0,
            unsupported_code TEXT NOT NULL DEFAULT '',
            unsupported_reason TEXT NOT NULL DEFAULT '',
            analysed_at TEXT NOT NULL
        )""",
        """CREATE TABLE decisions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            image_key TEXT NOT NULL REFERENCES images(image_key) ON DELETE CASCADE,
            decision TEXT NOT NULL CHECK (decision IN ('agree', 'disagree', 'uncertain')),
            comment TEXT NOT NULL DEFAULT '',
            reviewer TEXT NOT NULL DEFAULT '',
            reviewed_at TEXT NOT NULL
        )""",
        "CREATE INDEX results_by_image ON results(image_key, id)",
        "CREATE INDEX decisions_by_image ON decisions(image_key, id)",
    ),
    # v1 -> v2: series/modality/body part on images, plan/device on results, the result a
    # decision was about, audit events, lookups by folder and study.
    (
        "ALTER TABLE images ADD COLUMN series_uid TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE images ADD COLUMN modality TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE images ADD COLUMN body_part TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE results ADD COLUMN plan TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE results ADD COLUMN device TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE decisions ADD COLUMN result_id INTEGER REFERENCES results(id) ON DELETE SET NULL",
        """CREATE TABLE audit_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at TEXT NOT NULL,
            kind TEXT NOT NULL,
            image_key TEXT,
            actor TEXT NOT NULL DEFAULT '',
            detail TEXT NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX images_by_path ON images(path)",
        "CREATE INDEX images_by_study ON images(study_uid)",
        # Results of v1 databases were stored without a plan: say so rather than leave it blank.
        "UPDATE results SET plan = 'unknown (recorded before schema v2)' WHERE plan = ''",
    ),
    # v2 -> v3: image identity = SOP Instance UID + SHA-256 of the file's bytes (the key becomes
    # "<uid>|<sha256>"; older rows keep their key and an empty hash until a file at their path claims
    # them); one result type (status + its full JSON); decisions bind to the result they judged.
    (
        "ALTER TABLE images ADD COLUMN content_sha256 TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE images ADD COLUMN file_stamp TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE results ADD COLUMN status TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE results ADD COLUMN result_json TEXT NOT NULL DEFAULT ''",
        "UPDATE results SET status = CASE WHEN unsupported_code != '' THEN 'not-analysed' ELSE 'analysed' END",
        "CREATE INDEX images_by_uid ON images(sop_instance_uid)",
    ),
    # v3 -> v4: ILO readings per study and reader (queries in pneumoview/reading/repository.py).
    (
        "CREATE TABLE readers (name TEXT PRIMARY KEY, created_at TEXT NOT NULL)",
        """CREATE TABLE readings (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            study_uid TEXT NOT NULL CHECK (study_uid <> ''),
            reader TEXT NOT NULL REFERENCES readers(name),
            reading TEXT NOT NULL,
            result_id INTEGER REFERENCES results(id) ON DELETE SET NULL,
            submitted_at TEXT NOT NULL
        )""",
        "CREATE INDEX readings_by_study ON readings(study_uid, id)",
    ),
    # v4 -> v5: the audit log becomes hash-chained (pneumoview.audit) and append-only (triggers);
    # entries already there are sealed into the chain as they are.
    (
        "ALTER TABLE audit_events ADD COLUMN prev_hash TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE audit_events ADD COLUMN entry_hash TEXT NOT NULL DEFAULT ''",
        auditlog.seal_existing,
        *auditlog.GUARD_STATEMENTS,
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
#: First schema version whose audit log is chained (renumber with the migration above).
AUDIT_CHAIN_VERSION = 5
#: Class names of results recorded before schema v3 (the architecture's order then and now).
LEGACY_CLASS_NAMES = ("pneumoconiosis", "normal")


def migrate(conn: sqlite3.Connection, db_path: Path | None = None, *, target: int = SCHEMA_VERSION) -> int:
    """Bring the database on ``conn`` to schema ``target``; returns the version it had before.

    ``conn`` must be in autocommit mode (``isolation_level=None``). An existing database is
    copied to ``<name>.v<N>.bak`` beside ``db_path`` first. Raises StoreError for a database of
    a newer schema than this PneumoView knows.
    """
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    if current > SCHEMA_VERSION:
        raise StoreError(
            f"the results database has schema version {current}, newer than this PneumoView reads "
            f"({SCHEMA_VERSION}); update PneumoView",
            path=db_path,
        )
    if current >= target:
        return current
    if current > 0 and db_path is not None:
        backup_path = db_path.with_name(f"{db_path.name}.v{current}.bak")
        if not backup_path.exists():
            with contextlib.closing(sqlite3.connect(backup_path)) as backup:
                conn.backup(backup)
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have migrated
        for version in range(current, target):
            for statement in MIGRATIONS[version]:
                statement(conn) if callable(statement) else conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {int(target)}")
        if current > 0 and target >= AUDIT_CHAIN_VERSION:
            auditlog.append(conn, utc_now(), "schema-migrated", None, "", {"from": current, "to": target})
        elif current > 0 and target >= 2:
            conn.execute(
                "INSERT INTO audit_events (at, kind, image_key, actor, detail) VALUES (?, ?, NULL, '', ?)",
                (utc_now(), "schema-migrated", json.dumps({"from": current, "to": target})),
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return current
