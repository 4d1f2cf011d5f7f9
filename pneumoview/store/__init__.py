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

``image_key`` is :attr:`pneumoview.results.ImageIdentity.key`: SOP Instance UID (0008,0018) plus the
SHA-256 of the file's bytes, so two files sharing a UID (a truncated copy, a JPEG 2000 twin) never
share a result or a decision. Rows from before schema v3 keep their old key (the UID, or the path)
and an empty hash until a file at the same path with that UID claims them (:meth:`upsert_images`).
Every SQLite failure is a :class:`StoreError` (``disk full: ...`` on a full disk). A result is stored
whole as its JSON (``results.result_json``), so its provenance and the image-quality gate's codes and
below-gate mark come back as they were saved, with no column of their own.

The package: :mod:`~pneumoview.store.schema` (the migrations), :mod:`~pneumoview.store.rows` (the row
types) and :mod:`~pneumoview.store.results_store` (:class:`ResultStore`).
"""

from pneumoview.clock import utc_now
from pneumoview.store.results_store import ResultStore
from pneumoview.store.rows import ImageInfo, ImageState
from pneumoview.store.rows import _image as _image  # for pneumoview.reading.repository
from pneumoview.store.rows import _timestamp as _timestamp  # the same
from pneumoview.store.schema import MIGRATIONS, SCHEMA_VERSION, migrate

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "ImageInfo",
    "ImageState",
    "ResultStore",
    "migrate",
    "utc_now",
]
