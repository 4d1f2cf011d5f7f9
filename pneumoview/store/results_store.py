"""The results store: :class:`ResultStore` over one SQLite file (connections, transactions, queries).

The schema and its migrations are in :mod:`pneumoview.store.schema`, the row types in
:mod:`pneumoview.store.rows`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from pneumoview import audit as auditlog
from pneumoview import paths
from pneumoview.clock import utc_now
from pneumoview.errors import StoreError
from pneumoview.labels import DECISIONS
from pneumoview.report import ReportRow
from pneumoview.results import ImageResult, display_path
from pneumoview.store.rows import (
    AuditEvent,
    Decision,
    ImageInfo,
    ImageState,
    _decision,
    _image,
    _result,
    _timestamp,
    report_row,
)
from pneumoview.store.schema import SCHEMA_VERSION, migrate

_CHUNK = 500  # keys per IN (...) query, well under SQLite's variable limit
_T = TypeVar("_T")


def _sqlite_error(exc: sqlite3.Error, action: str, path: Path) -> StoreError:
    """A StoreError a person can act on: ``disk full: ...``, ``cannot write ...: read-only``, else SQLite's text."""
    name = getattr(exc, "sqlite_errorname", "")
    text = str(exc)
    if name == "SQLITE_FULL" or "database or disk is full" in text:
        return StoreError(f"disk full: cannot {action} the results database (free some space and try again)", path=path)
    if name.startswith("SQLITE_READONLY") or "readonly" in text or "read-only" in text:
        return StoreError(
            f"cannot {action} the results database: it is read-only (check the folder's permissions)", path=path
        )
    if name.startswith("SQLITE_IOERR") or "disk I/O error" in text:
        return StoreError(f"cannot {action} the results database: disk I/O error ({text})", path=path)
    return StoreError(f"cannot {action} the results database: {text}", path=path)


def _chunks(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


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
            raise _sqlite_error(exc, "open", self.path) from exc
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
            conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False)
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
                raise _sqlite_error(exc, "write to", self.path) from exc
            except BaseException:
                conn.execute("ROLLBACK TO write")
                conn.execute("RELEASE write")
                raise
            return
        with self._write_lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _sqlite_error(exc, "write to", self.path) from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise _sqlite_error(exc, "write to", self.path) from exc
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def batch(self) -> Iterator[ResultStore]:
        """Group this thread's writes into one transaction (one disk sync instead of one per row)::

            with store.batch():
                for result, info in zip(results, infos):
                    store.save(result, info)

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
            raise _sqlite_error(exc, "read", self.path) from exc

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

    def upsert_images(self, images: Iterable[ImageInfo]) -> int:
        """Record images (e.g. after a scan) without results; returns how many were written.

        An image whose key is new but whose UID and path match a row recorded before schema v3
        (no content hash) takes that row over, with its results and decisions.
        """
        infos = list(images)
        now = utc_now()
        with self._write() as conn:
            for info in infos:
                self._adopt_legacy(conn, info, now)
                self._upsert_image(conn, info, now)
        return len(infos)

    def _adopt_legacy(self, conn: sqlite3.Connection, info: ImageInfo, now: str) -> None:
        if not info.content_sha256:
            return
        old = conn.execute(
            "SELECT image_key FROM images WHERE content_sha256 = '' AND path = ? AND image_key IN (?, ?)",
            (info.path, info.sop_instance_uid or info.path, info.path),
        ).fetchone()
        if old is None:
            return
        old_key = old["image_key"]
        self._upsert_image(conn, info, now)
        for table in ("results", "decisions", "audit_events"):
            conn.execute(f"UPDATE {table} SET image_key = ? WHERE image_key = ?", (info.image_key, old_key))
        conn.execute("DELETE FROM images WHERE image_key = ?", (old_key,))
        self._audit(conn, "image-identified", info.image_key, "", {"legacy_key_was_uid": old_key != info.path})

    def save(self, result: ImageResult, image: ImageInfo | None = None) -> ImageResult:
        """Add ``result`` for its image (history kept; the latest wins); returns it with its row id.

        ``image`` records or refreshes the header fields (its key must be the result's); it may be
        omitted when the image is already known.
        """
        key = result.image.key
        if image is not None and image.image_key != key:
            raise StoreError(f"image key {image.image_key!r} does not match the result's key {key!r}")
        prov = result.provenance
        with self._write() as conn:
            if image is not None:
                self._upsert_image(conn, image, utc_now())
            elif conn.execute("SELECT 1 FROM images WHERE image_key = ?", (key,)).fetchone() is None:
                raise StoreError(f"unknown image {key!r}: pass image= with its header fields")
            cursor = conn.execute(
                "INSERT INTO results (image_key, model_id, model_name, model_version, model_fingerprint, "
                "probability, threshold, label, demo, unsupported_code, unsupported_reason, analysed_at, plan, device, "
                "status, result_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    prov.bundle_id,
                    prov.bundle_name,
                    prov.software_version,
                    prov.bundle_fingerprint,
                    result.probability,
                    prov.threshold,
                    result.label,
                    int(result.demo),
                    result.reason_code,
                    result.reason,
                    result.analysed_at or utc_now(),
                    prov.plan,
                    prov.device,
                    result.status,
                    "",
                ),
            )
            result_id = int(cursor.lastrowid or 0)
            saved = result.with_id(result_id)
            conn.execute("UPDATE results SET result_json = ? WHERE id = ?", (saved.to_json(), result_id))
            self._audit(
                conn,
                "result-saved",
                key,
                "",
                {"result_id": result_id, "model_id": prov.bundle_id, "status": result.status},
            )
        return saved

    def save_many(self, items: Iterable[tuple[ImageResult, ImageInfo | None]]) -> list[ImageResult]:
        """:meth:`save` for each, in one transaction."""
        with self.batch():
            return [self.save(result, image) for result, image in items]

    def save_decision(
        self,
        image_key: str,
        decision: str,
        comment: str = "",
        reviewer: str = "",
        *,
        result_id: int | None | object = ...,
        reviewed_at: datetime | str | None = None,
    ) -> Decision:
        """Add the reviewer's decision (agree / disagree / uncertain) for an image; history kept.

        ``result_id`` is the result the reviewer judged (None: none was shown); left out, the
        image's latest result.
        """
        when = _timestamp(reviewed_at)
        with self._write() as conn:
            return self._insert_decision(conn, image_key, decision, comment, reviewer, when, result_id)

    def _insert_decision(
        self,
        conn: sqlite3.Connection,
        image_key: str,
        decision: str,
        comment: str,
        reviewer: str,
        when: str,
        result_id: int | None | object = ...,
    ) -> Decision:
        if decision not in DECISIONS:
            raise StoreError(f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}")
        if conn.execute("SELECT 1 FROM images WHERE image_key = ?", (image_key,)).fetchone() is None:
            raise StoreError(f"cannot record a decision for unknown image {image_key!r}")
        if result_id is ...:
            result_id = conn.execute("SELECT MAX(id) FROM results WHERE image_key = ?", (image_key,)).fetchone()[0]
        elif (
            result_id is not None
            and conn.execute("SELECT 1 FROM results WHERE id = ? AND image_key = ?", (result_id, image_key)).fetchone()
            is None
        ):
            raise StoreError(f"result {result_id} is not a result of image {image_key!r}")
        cursor = conn.execute(
            "INSERT INTO decisions (image_key, decision, comment, reviewer, reviewed_at, result_id) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (image_key, decision, comment, reviewer, when, result_id),
        )
        decision_id = int(cursor.lastrowid or 0)
        self._audit(
            conn,
            "decision-saved",
            image_key,
            reviewer,
            {"decision_id": decision_id, "decision": decision, "result_id": result_id},
        )
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
        """The same decision for every known image of a study (each bound to its latest result), in one
        transaction (a row per image)."""
        when = _timestamp(reviewed_at)
        with self._write() as conn:
            keys = [
                r["image_key"]
                for r in conn.execute(
                    "SELECT image_key FROM images WHERE study_uid = ? ORDER BY image_key", (study_uid,)
                )
            ]
            if not study_uid or not keys:
                raise StoreError(f"no images of study {study_uid!r} in the results database")
            return [self._insert_decision(conn, k, decision, comment, reviewer, when) for k in keys]

    def audit(
        self, kind: str, *, image_key: str | None = None, actor: str = "", detail: dict[str, Any] | None = None
    ) -> None:
        """Record an event that is not a result or decision (e.g. ``export``, ``model-activated``)."""
        with self._write() as conn:
            self._audit(conn, kind, image_key, actor, detail or {})

    # -- reads ---------------------------------------------------------------
    def image(self, image_key: str) -> ImageInfo | None:
        rows = self._query("SELECT * FROM images WHERE image_key = ?", (image_key,))
        return _image(rows[0]) if rows else None

    def result(self, result_id: int) -> ImageResult | None:
        rows = self._query(
            "SELECT r.*, i.sop_instance_uid, i.path FROM results r JOIN images i "
            "ON i.image_key = r.image_key WHERE r.id = ?",
            (result_id,),
        )
        return _result(rows[0], rows[0]) if rows else None

    def result_for(self, image_key: str) -> ImageResult | None:
        """The latest result for an image, or None."""
        history = self._results(image_key, "DESC LIMIT 1")
        return history[0] if history else None

    def results_history(self, image_key: str) -> list[ImageResult]:
        """Every result for an image, oldest first."""
        return self._results(image_key, "")

    def _results(self, image_key: str, order: str) -> list[ImageResult]:
        rows = self._query(
            "SELECT r.*, i.sop_instance_uid, i.path FROM results r JOIN images i "
            f"ON i.image_key = r.image_key WHERE r.image_key = ? ORDER BY r.id {order}",
            (image_key,),
        )
        return [_result(r, r) for r in rows]

    def decision_for(self, image_key: str) -> Decision | None:
        """The latest decision for an image, or None."""
        rows = self._query("SELECT * FROM decisions WHERE image_key = ? ORDER BY id DESC LIMIT 1", (image_key,))
        return _decision(rows[0]) if rows else None

    def decision_history(self, image_key: str) -> list[Decision]:
        """Every decision for an image, oldest first."""
        return [
            _decision(r) for r in self._query("SELECT * FROM decisions WHERE image_key = ? ORDER BY id", (image_key,))
        ]

    def states(self, image_keys: Iterable[str]) -> dict[str, ImageState]:
        """Latest result and decision (and the result it judged) for each known key (unknown keys are absent)."""
        keys = list(dict.fromkeys(image_keys))
        out: dict[str, ImageState] = {}
        for chunk in _chunks(keys):
            marks = ", ".join("?" for _ in chunk)
            images = {
                r["image_key"]: _image(r)
                for r in self._query(f"SELECT * FROM images WHERE image_key IN ({marks})", chunk)
            }
            latest = f"SELECT MAX(id) FROM results WHERE image_key IN ({marks}) GROUP BY image_key"
            decisions = {
                r["image_key"]: _decision(r)
                for r in self._query(
                    f"SELECT * FROM decisions WHERE id IN (SELECT MAX(id) FROM decisions WHERE image_key IN ({marks}) GROUP BY image_key)",
                    chunk,
                )
            }
            judged_ids = [d.result_id for d in decisions.values() if d.result_id is not None]
            rows = self._query(f"SELECT * FROM results WHERE id IN ({latest})", chunk)
            for ids in _chunks(judged_ids):
                rows += self._query(f"SELECT * FROM results WHERE id IN ({', '.join('?' for _ in ids)})", ids)
            by_id = {int(r["id"]): _result(r, images.get(r["image_key"])) for r in rows}
            results: dict[str, ImageResult] = {}
            for r in rows:
                key = r["image_key"]
                current = results.get(key)
                if current is None or int(r["id"]) > int(current.id or 0):
                    results[key] = by_id[int(r["id"])]
            for key, info in images.items():
                decision = decisions.get(key)
                judged = by_id.get(decision.result_id) if decision is not None and decision.result_id else None
                out[key] = ImageState(info, results.get(key), decision, judged)
        return out

    def model_results(self, bundle_fingerprint: str) -> list[tuple[ImageInfo, ImageResult]]:
        """For each image with an analysed result of the bundle whose weights' SHA-256 is
        ``bundle_fingerprint``: its header row and the latest such result (other bundles' results
        and failures are never mixed in), ordered by image key."""
        rows = self._query(
            "SELECT r.* FROM results r "
            "WHERE r.id IN (SELECT MAX(id) FROM results WHERE model_fingerprint = ? AND probability IS NOT NULL "
            "AND status = 'analysed' GROUP BY image_key) ORDER BY r.image_key",
            (bundle_fingerprint,),
        )
        infos = {
            r["image_key"]: _image(r)
            for r in self._query(
                "SELECT * FROM images WHERE image_key IN (SELECT image_key FROM results WHERE model_fingerprint = ?)",
                (bundle_fingerprint,),
            )
        }
        return [(infos[r["image_key"]], _result(r, infos[r["image_key"]])) for r in rows]

    def study_model_fingerprints(self) -> dict[str, set[str]]:
        """For each study (0020,000D) with analysed results: the bundle fingerprints that analysed its images."""
        out: dict[str, set[str]] = {}
        for r in self._query(
            "SELECT DISTINCT i.study_uid, r.model_fingerprint FROM results r JOIN images i ON i.image_key = r.image_key "
            "WHERE r.probability IS NOT NULL AND r.status = 'analysed'"
        ):
            out.setdefault(r["study_uid"], set()).add(r["model_fingerprint"])
        return out

    def images_under(self, folder: str | os.PathLike[str]) -> list[ImageInfo]:
        """Known images whose file lies in ``folder`` or below (reopening a folder)."""
        root = display_path(Path(folder).resolve())
        prefix = root.rstrip(os.sep) + os.sep
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._query("SELECT * FROM images WHERE path LIKE ? ESCAPE '\\' ORDER BY path", (escaped + "%",))
        # LIKE is case-insensitive for ASCII; keep exact-prefix matches only.
        return [_image(r) for r in rows if r["path"].startswith(prefix)]

    def images_of_patient(self, patient_id: str) -> list[ImageInfo]:
        """Known images whose Patient ID (0010,0020) is exactly ``patient_id`` (priors: pneumoview.priors);
        an empty ID matches nothing."""
        if not patient_id:
            return []
        return [
            _image(r) for r in self._query("SELECT * FROM images WHERE patient_id = ? ORDER BY path", (patient_id,))
        ]

    def known_hashes(self, paths: Iterable[str]) -> dict[str, tuple[str, str, str]]:
        """For files seen before (display paths): ``path -> (uid, content_sha256, file_stamp)``, so a file
        whose stamp (size, modification and change times) is unchanged need not be read again to hash it."""
        wanted = list(dict.fromkeys(paths))
        out: dict[str, tuple[str, str, str]] = {}
        for chunk in _chunks(wanted):
            marks = ", ".join("?" for _ in chunk)
            for r in self._query(
                f"SELECT path, sop_instance_uid, content_sha256, file_stamp FROM images "
                f"WHERE path IN ({marks}) AND content_sha256 != '' AND file_stamp != ''",
                chunk,
            ):
                out[r["path"]] = (r["sop_instance_uid"], r["content_sha256"], r["file_stamp"])
        return out

    def duplicates(self, infos: Iterable[ImageInfo]) -> dict[str, list[str]]:
        """For each image key: the paths of other known images with the same SOP Instance UID (other bytes)."""
        wanted = [i for i in infos if i.sop_instance_uid]
        uids = list(dict.fromkeys(i.sop_instance_uid for i in wanted))
        by_uid: dict[str, list[tuple[str, str]]] = {}
        for chunk in _chunks(uids):
            marks = ", ".join("?" for _ in chunk)
            for r in self._query(
                f"SELECT image_key, sop_instance_uid, path FROM images "
                f"WHERE sop_instance_uid IN ({marks}) ORDER BY path",
                chunk,
            ):
                by_uid.setdefault(r["sop_instance_uid"], []).append((r["image_key"], r["path"]))
        return {i.image_key: [p for k, p in by_uid.get(i.sop_instance_uid, []) if k != i.image_key] for i in wanted}

    def report_rows(self, image_keys: Iterable[str] | None = None) -> list[ReportRow]:
        """One row per image that has a result or a decision (latest of each, with its review status and
        the other files sharing its UID), ordered by patient, study, path. ``image_keys`` limits it to
        the user's selection."""
        if image_keys is None:
            keys = [
                r["image_key"]
                for r in self._query(
                    "SELECT image_key FROM images i WHERE EXISTS (SELECT 1 FROM results WHERE image_key = i.image_key) "
                    "OR EXISTS (SELECT 1 FROM decisions WHERE image_key = i.image_key)"
                )
            ]
        else:
            keys = list(dict.fromkeys(image_keys))
        states = self.states(keys)
        dups = self.duplicates(s.image for s in states.values())
        rows = [
            report_row(state, duplicates=dups.get(key, ()))
            for key, state in states.items()
            if state.result is not None or state.decision is not None
        ]
        rows.sort(key=lambda r: (r.patient_id, r.study_uid, r.path))
        return rows

    def audit_events(self, *, kind: str | None = None, limit: int = 1000) -> list[AuditEvent]:
        """Most recent audit events first."""
        if kind is None:
            rows = self._query("SELECT * FROM audit_events ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._query("SELECT * FROM audit_events WHERE kind = ? ORDER BY id DESC LIMIT ?", (kind, limit))
        return [
            AuditEvent(r["id"], r["at"], r["kind"], r["image_key"], r["actor"], json.loads(r["detail"])) for r in rows
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
