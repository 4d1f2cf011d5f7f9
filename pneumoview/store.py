"""The local results database: model outputs, reviewer decisions and audit events in SQLite.

* One file (default ``paths.database_path()``, i.e. the platformdirs user-data folder or
  ``$PNEUMOVIEW_HOME/data``), WAL journal, ``synchronous=FULL``, foreign keys on: a killed
  process leaves the database consistent and every committed row in place.
* The schema is versioned with ``PRAGMA user_version``; :data:`MIGRATIONS` is an append-only
  list (migration *i* takes version *i* to *i + 1*). Opening an older database migrates it in one
  transaction after copying it to ``<name>.v<N>.bak``; a newer one is refused.
* History is kept: every analysis adds a result row and every review adds a decision row; the
  latest (highest id) wins. Each write also adds an audit event in the same transaction.
* Thread-safe: each thread gets its own connection; writes are serialised by a lock and
  ``BEGIN IMMEDIATE`` (and by SQLite's busy timeout across processes). Each write is its own
  transaction; :meth:`ResultStore.batch` groups many (one disk sync for a whole batch).

``image_key`` is the SOP Instance UID (0008,0018) of a DICOM image, or the absolute path of a
non-DICOM file (see :func:`image_key_for`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pneumoview import audit as auditlog
from pneumoview import paths
from pneumoview.errors import StoreError
from pneumoview.labels import DECISIONS
from pneumoview.report import ReportRow

# --------------------------------------------------------------------------- schema
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
    # v2 -> v3: the audit log becomes hash-chained (pneumoview.audit) and append-only (triggers);
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
AUDIT_CHAIN_VERSION = 3
_CHUNK = 500  # keys per IN (...) query, well under SQLite's variable limit


def utc_now() -> str:
    """Current time as ISO 8601 UTC with a ``Z``, to the microsecond."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _timestamp(value: datetime | str | None) -> str:
    if value is None:
        return utc_now()
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise StoreError("timestamps must be timezone-aware (UTC)")
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value


# --------------------------------------------------------------------------- records
@dataclass(frozen=True)
class ImageInfo:
    """The header fields the store keeps for an image (from a scan's ImageRecord)."""

    image_key: str
    path: str
    sop_instance_uid: str = ""
    patient_id: str = ""
    patient_name: str = ""
    study_uid: str = ""
    study_date: str = ""
    accession: str = ""
    view_position: str = ""
    series_uid: str = ""
    modality: str = ""
    body_part: str = ""

    @classmethod
    def from_record(cls, record: Any) -> ImageInfo:
        """From ``pneumoview.dicom.scan.ImageRecord`` (or anything with the same attribute names)."""
        def text(name: str) -> str:
            value = getattr(record, name, "")
            return "" if value is None else str(value)

        return cls(
            image_key=image_key_for(record),
            path=str(Path(record.path).resolve()),
            sop_instance_uid=text("sop_instance_uid"),
            patient_id=text("patient_id"),
            patient_name=text("patient_name"),
            study_uid=text("study_uid"),
            study_date=text("study_date"),
            accession=text("accession"),
            view_position=text("view_position"),
            series_uid=text("series_uid"),
            modality=text("modality"),
            body_part=text("body_part"),
        )


def image_key_for(record: Any) -> str:
    """SOP Instance UID (0008,0018) when there is one, else the absolute path of the file."""
    uid = getattr(record, "sop_instance_uid", "") or ""
    return str(uid) if uid else str(Path(record.path).resolve())


def model_fields(manifest: Any) -> dict[str, str]:
    """Report fields of a bundle manifest (``inference.bundle.Manifest`` or its JSON dict):
    ``model_id``; ``model_name`` = manifest ``name`` (else architecture); ``model_version`` =
    manifest ``model_id`` (unique per training run) plus ``app_version`` when known;
    ``model_fingerprint`` = first 16 hex digits of the weights file's SHA-256."""
    data = manifest if isinstance(manifest, dict) else vars(manifest)

    def text(name: str) -> str:
        value = data.get(name)
        return "" if value is None else str(value)

    version = text("model_id")
    if text("app_version"):
        version = f"{version} (PneumoView {text('app_version')})" if version else f"PneumoView {text('app_version')}"
    return {
        "model_id": text("model_id"),
        "model_name": text("name") or text("architecture"),
        "model_version": version,
        "model_fingerprint": text("weights_sha256")[:16],
    }


@dataclass(frozen=True)
class StoredResult:
    id: int
    image_key: str
    probability: float | None  # None for unsupported images
    threshold: float | None
    label: str  # plain class name; see labels.display_label for what to show
    demo: bool
    model_id: str
    model_name: str
    model_version: str
    model_fingerprint: str
    plan: str
    device: str
    analysed_at: str
    unsupported_code: str
    unsupported_reason: str

    @property
    def unsupported(self) -> bool:
        return bool(self.unsupported_code)


@dataclass(frozen=True)
class Decision:
    id: int
    image_key: str
    decision: str  # one of labels.DECISIONS
    comment: str
    reviewer: str
    reviewed_at: str
    result_id: int | None  # the result shown when the reviewer decided


@dataclass(frozen=True)
class ImageState:
    """What the UI shows for an image on reopening a folder: latest result and decision."""

    image: ImageInfo
    result: StoredResult | None
    decision: Decision | None


@dataclass(frozen=True)
class AuditEvent:
    id: int
    at: str
    kind: str
    image_key: str | None
    actor: str
    detail: dict[str, Any]


def _from_row(cls: type, row: sqlite3.Row, **overrides: Any) -> Any:
    names = [f.name for f in fields(cls)]
    values = {n: row[n] for n in names if n not in overrides}
    return cls(**values, **overrides)


def _result(row: sqlite3.Row) -> StoredResult:
    return _from_row(StoredResult, row, demo=bool(row["demo"]))


def _decision(row: sqlite3.Row) -> Decision:
    return _from_row(Decision, row)


def _image(row: sqlite3.Row) -> ImageInfo:
    return _from_row(ImageInfo, row)


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


# --------------------------------------------------------------------------- migrations
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


# --------------------------------------------------------------------------- the store
class ResultStore:
    """Results, decisions and audit events for every image PneumoView has analysed.

    Use as a context manager or call :meth:`close`. Raises StoreError for anything SQLite refuses.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, timeout: float = 10.0) -> None:
        self.path = Path(path) if path is not None else paths.database_path()
        self._timeout = timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._write_lock = threading.RLock()
        self._closed = False
        try:
            # A new data folder is private (0700 on POSIX): the database holds patient data.
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            conn = self._connection()
            self.previous_schema_version = migrate(conn, self.path)
        except sqlite3.DatabaseError as exc:
            self.close()
            raise StoreError(f"cannot open the results database: {exc}", path=self.path) from exc
        except OSError as exc:
            self.close()
            raise StoreError(f"cannot create the results folder: {exc.strerror or exc}", path=self.path) from exc
        except StoreError:
            self.close()
            raise
        self.schema_version = SCHEMA_VERSION

    # -- connections -------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError("the results database is closed", path=self.path)
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            self.journal_mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA busy_timeout={int(self._timeout * 1000)}")
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT), rolled back on any error.

        Inside :meth:`batch` it is a SAVEPOINT instead, so a failed write undoes only itself.
        """
        conn = self._connection()
        if getattr(self._local, "batch_depth", 0):
            conn.execute("SAVEPOINT write")
            try:
                yield conn
                conn.execute("RELEASE write")
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK TO write")
                conn.execute("RELEASE write")
                raise StoreError(f"cannot write to the results database: {exc}", path=self.path) from exc
            except BaseException:
                conn.execute("ROLLBACK TO write")
                conn.execute("RELEASE write")
                raise
            return
        with self._write_lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"the results database is busy or read-only: {exc}", path=self.path) from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK")
                raise StoreError(f"cannot write to the results database: {exc}", path=self.path) from exc
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def batch(self) -> Iterator[ResultStore]:
        """Group this thread's writes into one transaction (one disk sync instead of one per row)::

            with store.batch():
                for record, prediction in zip(records, predictions):
                    store.save_prediction(record, prediction)

        Everything in the block is committed together, or nothing if the block raises. A write
        that raises StoreError inside the block is undone by itself; catching it keeps the rest.
        """
        depth = getattr(self._local, "batch_depth", 0)
        if depth:
            self._local.batch_depth = depth + 1
            try:
                yield self
            finally:
                self._local.batch_depth = depth
            return
        with self._write():
            self._local.batch_depth = 1
            try:
                yield self
            finally:
                self._local.batch_depth = 0

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        try:
            return self._connection().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the results database: {exc}", path=self.path) from exc

    def close(self) -> None:
        """Close every thread's connection; later calls raise StoreError."""
        self._closed = True
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- writes --------------------------------------------------------------
    @staticmethod
    def _upsert_image(conn: sqlite3.Connection, info: ImageInfo, now: str) -> None:
        columns = [f.name for f in fields(ImageInfo)]
        placeholders = ", ".join("?" for _ in columns)
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != "image_key")
        conn.execute(
            f"INSERT INTO images ({', '.join(columns)}, first_seen, updated_at) VALUES ({placeholders}, ?, ?) "
            f"ON CONFLICT(image_key) DO UPDATE SET {updates}, updated_at = excluded.updated_at",
            [getattr(info, c) for c in columns] + [now, now],
        )

    @staticmethod
    def _audit(conn: sqlite3.Connection, kind: str, image_key: str | None, actor: str, detail: dict[str, Any]) -> None:
        """Append a hash-chained audit entry inside the caller's write transaction."""
        auditlog.append(conn, utc_now(), kind, image_key, actor, detail)

    def upsert_images(self, images: Iterable[ImageInfo | Any]) -> int:
        """Record images (e.g. after a scan) without results; returns how many were written."""
        infos = [i if isinstance(i, ImageInfo) else ImageInfo.from_record(i) for i in images]
        now = utc_now()
        with self._write() as conn:
            for info in infos:
                self._upsert_image(conn, info, now)
        return len(infos)

    def save_result(
        self,
        image_key: str,
        *,
        image: ImageInfo | Any | None = None,
        probability: float | None,
        threshold: float | None,
        label: str,
        model_id: str = "",
        model_name: str = "",
        model_version: str = "",
        model_fingerprint: str = "",
        demo: bool = False,
        plan: str = "",
        device: str = "",
        analysed_at: datetime | str | None = None,
        unsupported_code: str = "",
        unsupported_reason: str = "",
    ) -> StoredResult:
        """Add a model output for ``image_key`` (history kept; the latest wins).

        ``image`` (an ImageInfo or a scan ImageRecord) records or refreshes the header fields;
        it may be omitted when the image is already known. For an image the model cannot
        diagnose, pass ``probability=None, threshold=None, label=""`` and ``unsupported_code``.
        """
        if unsupported_code:
            if probability is not None:
                raise StoreError(f"an unsupported image has no probability ({image_key})")
        else:
            if probability is None or not (0.0 <= probability <= 1.0) or math.isnan(probability):
                raise StoreError(f"probability must be between 0 and 1, not {probability!r} ({image_key})")
            if threshold is None or not (0.0 < threshold < 1.0):
                raise StoreError(f"threshold must be strictly between 0 and 1, not {threshold!r} ({image_key})")
            if not label:
                raise StoreError(f"a result needs a label ({image_key})")
        info = None
        if image is not None:
            info = image if isinstance(image, ImageInfo) else ImageInfo.from_record(image)
            if info.image_key != image_key:
                raise StoreError(f"image key {image_key!r} does not match the image's key {info.image_key!r}")
        when = _timestamp(analysed_at)
        with self._write() as conn:
            if info is not None:
                self._upsert_image(conn, info, utc_now())
            elif conn.execute("SELECT 1 FROM images WHERE image_key = ?", (image_key,)).fetchone() is None:
                raise StoreError(f"unknown image {image_key!r}: pass image= with its header fields")
            cursor = conn.execute(
                "INSERT INTO results (image_key, model_id, model_name, model_version, model_fingerprint, "
                "probability, threshold, label, demo, unsupported_code, unsupported_reason, analysed_at, plan, device) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    image_key, model_id, model_name, model_version, model_fingerprint,
                    None if probability is None else float(probability),
                    None if threshold is None else float(threshold),
                    label, int(bool(demo)), unsupported_code, unsupported_reason, when, plan, device,
                ),
            )
            result_id = int(cursor.lastrowid)
            self._audit(
                conn,
                "result-saved",
                image_key,
                "",
                {"result_id": result_id, "model_id": model_id, "unsupported": unsupported_code or None},
            )
            row = conn.execute("SELECT * FROM results WHERE id = ?", (result_id,)).fetchone()
        return _result(row)

    def save_unsupported(
        self,
        image_key: str,
        *,
        code: str,
        reason: str,
        image: ImageInfo | Any | None = None,
        analysed_at: datetime | str | None = None,
    ) -> StoredResult:
        """Record that an image cannot be diagnosed (e.g. ``lateral-view``) and why."""
        if not code:
            raise StoreError("an unsupported result needs a reason code")
        return self.save_result(
            image_key,
            image=image,
            probability=None,
            threshold=None,
            label="",
            analysed_at=analysed_at,
            unsupported_code=code,
            unsupported_reason=reason,
        )

    def save_prediction(
        self,
        image: ImageInfo | Any,
        prediction: Any,
        *,
        manifest: Any = None,
        model_version: str = "",
        model_fingerprint: str = "",
        plan: str = "",
        device: str = "",
        analysed_at: datetime | str | None = None,
    ) -> StoredResult:
        """Store an ``inference.engine.Prediction`` (probability, class_name or label, threshold,
        model_id, model_name, demo) for an ImageRecord / ImageInfo. The plain class name is stored;
        the demo mark comes from the demo flag when the label is shown or exported.

        With ``manifest`` (an ``inference.bundle.Manifest`` or its dict), the version and
        fingerprint come from it (see :func:`model_fields`) unless given explicitly.
        """
        if manifest is not None:
            fields_ = model_fields(manifest)
            model_version = model_version or fields_["model_version"]
            model_fingerprint = model_fingerprint or fields_["model_fingerprint"]
        info = image if isinstance(image, ImageInfo) else ImageInfo.from_record(image)
        return self.save_result(
            info.image_key,
            image=info,
            probability=float(prediction.probability),
            threshold=float(prediction.threshold),
            label=str(getattr(prediction, "class_name", "") or prediction.label),
            model_id=str(getattr(prediction, "model_id", "")),
            model_name=str(getattr(prediction, "model_name", "")),
            model_version=model_version,
            model_fingerprint=model_fingerprint,
            demo=bool(getattr(prediction, "demo", False)),
            plan=plan,
            device=device,
            analysed_at=analysed_at,
        )

    def save_decision(
        self,
        image_key: str,
        decision: str,
        comment: str = "",
        reviewer: str = "",
        *,
        reviewed_at: datetime | str | None = None,
    ) -> Decision:
        """Add the reviewer's decision (agree / disagree / uncertain) for an image; history kept."""
        when = _timestamp(reviewed_at)
        with self._write() as conn:
            return self._insert_decision(conn, image_key, decision, comment, reviewer, when)

    def _insert_decision(
        self, conn: sqlite3.Connection, image_key: str, decision: str, comment: str, reviewer: str, when: str
    ) -> Decision:
        if decision not in DECISIONS:
            raise StoreError(f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}")
        if conn.execute("SELECT 1 FROM images WHERE image_key = ?", (image_key,)).fetchone() is None:
            raise StoreError(f"cannot record a decision for unknown image {image_key!r}")
        latest = conn.execute("SELECT MAX(id) FROM results WHERE image_key = ?", (image_key,)).fetchone()[0]
        cursor = conn.execute(
            "INSERT INTO decisions (image_key, decision, comment, reviewer, reviewed_at, result_id) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (image_key, decision, comment, reviewer, when, latest),
        )
        decision_id = int(cursor.lastrowid)
        self._audit(conn, "decision-saved", image_key, reviewer, {"decision_id": decision_id, "decision": decision})
        return _decision(conn.execute("SELECT * FROM decisions WHERE id = ?", (decision_id,)).fetchone())

    def save_study_decision(
        self,
        study_uid: str,
        decision: str,
        comment: str = "",
        reviewer: str = "",
        *,
        reviewed_at: datetime | str | None = None,
    ) -> list[Decision]:
        """The same decision for every known image of a study, in one transaction (a row per image)."""
        when = _timestamp(reviewed_at)
        with self._write() as conn:
            keys = [
                r["image_key"]
                for r in conn.execute("SELECT image_key FROM images WHERE study_uid = ? ORDER BY image_key", (study_uid,))
            ]
            if not study_uid or not keys:
                raise StoreError(f"no images of study {study_uid!r} in the results database")
            return [self._insert_decision(conn, k, decision, comment, reviewer, when) for k in keys]

    def audit(self, kind: str, *, image_key: str | None = None, actor: str = "", detail: dict[str, Any] | None = None) -> None:
        """Record an event that is not a result or decision (e.g. ``export``, ``model-activated``)."""
        with self._write() as conn:
            self._audit(conn, kind, image_key, actor, detail or {})

    # -- reads ---------------------------------------------------------------
    def image(self, image_key: str) -> ImageInfo | None:
        rows = self._query("SELECT * FROM images WHERE image_key = ?", (image_key,))
        return _image(rows[0]) if rows else None

    def result_for(self, image_key: str) -> StoredResult | None:
        """The latest result for an image, or None."""
        rows = self._query("SELECT * FROM results WHERE image_key = ? ORDER BY id DESC LIMIT 1", (image_key,))
        return _result(rows[0]) if rows else None

    def results_history(self, image_key: str) -> list[StoredResult]:
        """Every result for an image, oldest first."""
        return [_result(r) for r in self._query("SELECT * FROM results WHERE image_key = ? ORDER BY id", (image_key,))]

    def decision_for(self, image_key: str) -> Decision | None:
        """The latest decision for an image, or None."""
        rows = self._query("SELECT * FROM decisions WHERE image_key = ? ORDER BY id DESC LIMIT 1", (image_key,))
        return _decision(rows[0]) if rows else None

    def decision_history(self, image_key: str) -> list[Decision]:
        """Every decision for an image, oldest first."""
        return [_decision(r) for r in self._query("SELECT * FROM decisions WHERE image_key = ? ORDER BY id", (image_key,))]

    def states(self, image_keys: Iterable[str]) -> dict[str, ImageState]:
        """Latest result and decision for each known key (unknown keys are absent from the dict)."""
        keys = list(dict.fromkeys(image_keys))
        out: dict[str, ImageState] = {}
        for chunk in _chunks(keys):
            marks = ", ".join("?" for _ in chunk)
            images = {r["image_key"]: _image(r) for r in self._query(f"SELECT * FROM images WHERE image_key IN ({marks})", chunk)}
            results = {
                r["image_key"]: _result(r)
                for r in self._query(
                    f"SELECT * FROM results WHERE id IN (SELECT MAX(id) FROM results WHERE image_key IN ({marks}) GROUP BY image_key)",
                    chunk,
                )
            }
            decisions = {
                r["image_key"]: _decision(r)
                for r in self._query(
                    f"SELECT * FROM decisions WHERE id IN (SELECT MAX(id) FROM decisions WHERE image_key IN ({marks}) GROUP BY image_key)",
                    chunk,
                )
            }
            for key, info in images.items():
                out[key] = ImageState(info, results.get(key), decisions.get(key))
        return out

    def images_under(self, folder: str | os.PathLike[str]) -> list[ImageInfo]:
        """Known images whose file lies in ``folder`` or below (reopening a folder)."""
        root = str(Path(folder).resolve())
        prefix = root.rstrip(os.sep) + os.sep
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._query(
            "SELECT * FROM images WHERE path LIKE ? ESCAPE '\\' ORDER BY path", (escaped + "%",)
        )
        # LIKE is case-insensitive for ASCII; keep exact-prefix matches only.
        return [_image(r) for r in rows if r["path"].startswith(prefix)]

    def report_rows(self, image_keys: Iterable[str] | None = None) -> list[ReportRow]:
        """One row per image that has a result or a decision (latest of each), ordered by
        patient, study, path. ``image_keys`` limits it to the user's selection."""
        sql = (
            "SELECT i.*, r.probability, r.threshold, r.label, r.demo, r.model_id, r.model_name, r.model_version, "
            "r.model_fingerprint, r.analysed_at, r.unsupported_code, r.unsupported_reason, "
            "d.decision, d.comment, d.reviewer, d.reviewed_at "
            "FROM images i "
            "LEFT JOIN results r ON r.id = (SELECT MAX(id) FROM results WHERE image_key = i.image_key) "
            "LEFT JOIN decisions d ON d.id = (SELECT MAX(id) FROM decisions WHERE image_key = i.image_key) "
            "WHERE (r.id IS NOT NULL OR d.id IS NOT NULL)"
        )
        order = " ORDER BY i.patient_id, i.study_uid, i.path"
        if image_keys is None:
            rows = self._query(sql + order)
        else:
            keys = list(dict.fromkeys(image_keys))
            rows = []
            for chunk in _chunks(keys):
                marks = ", ".join("?" for _ in chunk)
                rows.extend(self._query(sql + f" AND i.image_key IN ({marks})", chunk))
            rows.sort(key=lambda r: (r["patient_id"], r["study_uid"], r["path"]))
        return [self._report_row(r) for r in rows]

    @staticmethod
    def _report_row(r: sqlite3.Row) -> ReportRow:
        def text(name: str) -> str:
            value = r[name]
            return "" if value is None else str(value)

        return ReportRow(
            image_key=r["image_key"],
            patient_id=r["patient_id"],
            patient_name=r["patient_name"],
            study_uid=r["study_uid"],
            accession=r["accession"],
            study_date=r["study_date"],
            view=r["view_position"],
            source_path=r["path"],
            probability=r["probability"],
            threshold=r["threshold"],
            label=text("label"),
            demo=bool(r["demo"]),
            model_id=text("model_id"),
            model_name=text("model_name"),
            model_version=text("model_version"),
            model_fingerprint=text("model_fingerprint"),
            decision=text("decision"),
            comment=text("comment"),
            reviewer=text("reviewer"),
            analysed_at=text("analysed_at"),
            reviewed_at=text("reviewed_at"),
            unsupported_code=text("unsupported_code"),
            unsupported_reason=text("unsupported_reason"),
        )

    def audit_events(self, *, kind: str | None = None, limit: int = 1000) -> list[AuditEvent]:
        """Most recent audit events first."""
        if kind is None:
            rows = self._query("SELECT * FROM audit_events ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._query("SELECT * FROM audit_events WHERE kind = ? ORDER BY id DESC LIMIT ?", (kind, limit))
        return [
            AuditEvent(r["id"], r["at"], r["kind"], r["image_key"], r["actor"], json.loads(r["detail"]))
            for r in rows
        ]

    def audit_chain(self) -> tuple[list[auditlog.ChainEntry], int, set[str]]:
        """Every audit entry oldest first, the table's AUTOINCREMENT counter and the guard triggers
        present, read in one transaction (for :func:`pneumoview.audit.verify` and the export)."""
        conn = self._connection()
        if getattr(self._local, "batch_depth", 0):  # already inside this thread's transaction
            return auditlog.read_chain(conn)
        with self._write_lock:
            try:
                conn.execute("BEGIN")
                try:
                    return auditlog.read_chain(conn)
                finally:
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read the audit log: {exc}", path=self.path) from exc

    def verify_audit(self) -> auditlog.Verification:
        """Check the whole audit chain (see :mod:`pneumoview.audit`)."""
        return auditlog.verify(*self.audit_chain())

    def integrity_check(self) -> str:
        """``"ok"`` when SQLite finds the file consistent (PRAGMA integrity_check)."""
        return "\n".join(str(r[0]) for r in self._query("PRAGMA integrity_check"))
