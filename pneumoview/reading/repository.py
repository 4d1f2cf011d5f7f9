"""ILO readings in the results database (tables ``readers`` and ``readings``, schema v3).

Works on a :class:`~pneumoview.store.ResultStore`'s connection: writes go through its
``_write()`` transaction (with an audit event in the same transaction), reads through ``_query``.
A reading is stored as the JSON of :meth:`Reading.to_json_dict` and validated again when read
back; history is kept (a reader's latest reading of a study counts).

Blinding is enforced here for what a signed-in reader may see: :meth:`ReadingRepository.visible_to`.
The unblinded :meth:`ReadingRepository.readings_for` is for the rules, the dashboard and exports.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime

from pneumoview.errors import ReadingError, StoreError
from pneumoview.reading import rules
from pneumoview.reading.ilo import Reading
from pneumoview.reading.rules import AiSuggestion, FinalDetermination, FinalRule, SubmittedReading
from pneumoview.store import ImageInfo, ResultStore, _image, _timestamp, utc_now


class ReadingRepository:
    """Readers and readings of one results database."""

    def __init__(self, store: ResultStore, rule: FinalRule | None = None) -> None:
        self.store = store
        self.rule = rule or FinalRule()

    # -- readers ---------------------------------------------------------------
    def sign_in(self, name: str) -> str:
        """Register the reader on first sign-in; returns the normalised name."""
        reader = rules.reader_name(name)
        with self.store._write() as conn:
            cursor = conn.execute("INSERT OR IGNORE INTO readers (name, created_at) VALUES (?, ?)", (reader, utc_now()))
            if cursor.rowcount:
                self.store._audit(conn, "reader-added", None, reader, {})
        return reader

    def readers(self) -> list[str]:
        return [r["name"] for r in self.store._query("SELECT name FROM readers ORDER BY name COLLATE NOCASE")]

    # -- readings --------------------------------------------------------------
    def submit(
        self,
        study_uid: str,
        reader: str,
        reading: Reading,
        *,
        ai: AiSuggestion | None = None,
        submitted_at: datetime | str | None = None,
    ) -> SubmittedReading:
        """Validate and store ``reader``'s reading of ``study_uid`` (the reader must have signed in).
        ``ai`` is the suggestion that was on screen; only its result id is kept."""
        reading.validate()
        if not study_uid:
            raise ReadingError("a reading needs the study's Study Instance UID (0020,000D)", field="study_uid")
        rules.check_may_submit(self.readings_for(study_uid), reader, self.rule)
        when = _timestamp(submitted_at)
        payload = json.dumps(reading.to_json_dict(), sort_keys=True, ensure_ascii=False)
        result_id = ai.result_id if ai is not None else None
        with self.store._write() as conn:
            if conn.execute("SELECT 1 FROM readers WHERE name = ?", (reader,)).fetchone() is None:
                raise ReadingError(f"reader {reader!r} has not signed in", field="reader")
            cursor = conn.execute(
                "INSERT INTO readings (study_uid, reader, reading, result_id, submitted_at) VALUES (?, ?, ?, ?, ?)",
                (study_uid, reader, payload, result_id, when),
            )
            reading_id = int(cursor.lastrowid or 0)
            self.store._audit(conn, "reading-submitted", None, reader, {"reading_id": reading_id})
        return SubmittedReading(reading_id, study_uid, reader, reading, when, result_id)

    def readings_for(self, study_uid: str) -> list[SubmittedReading]:
        """Every reading of a study, oldest first, unblinded (rules, dashboard, export)."""
        rows = self.store._query("SELECT * FROM readings WHERE study_uid = ? ORDER BY id", (study_uid,))
        return [self._submitted(r) for r in rows]

    def all_readings(self) -> list[SubmittedReading]:
        return [self._submitted(r) for r in self.store._query("SELECT * FROM readings ORDER BY study_uid, id")]

    def by_study(self) -> dict[str, list[SubmittedReading]]:
        out: dict[str, list[SubmittedReading]] = {}
        for r in self.all_readings():
            out.setdefault(r.study_uid, []).append(r)
        return out

    def visible_to(self, study_uid: str, reader: str) -> list[SubmittedReading]:
        """What ``reader`` may see of a study: nothing of the others until their own reading is in."""
        return rules.visible_readings(self.readings_for(study_uid), reader)

    def latest_of(self, study_uid: str, reader: str) -> SubmittedReading | None:
        own = [r for r in self.readings_for(study_uid) if r.reader == reader]
        return own[-1] if own else None

    def final(self, study_uid: str) -> FinalDetermination:
        return rules.determine(study_uid, self.readings_for(study_uid), self.rule)

    def arbitration_queue(self, reader: str | None = None) -> list[FinalDetermination]:
        return rules.arbitration_queue(self.by_study(), self.rule, reader=reader)

    # -- study context (from the store's images and results) -------------------
    def study_images(self, study_uid: str) -> list[ImageInfo]:
        rows = self.store._query("SELECT * FROM images WHERE study_uid = ? ORDER BY image_key", (study_uid,))
        return [_image(r) for r in rows]

    def ai_suggestion(self, study_uid: str) -> AiSuggestion | None:
        """The latest model result of each of the study's images; the highest probability wins
        (a study is screened positive when any of its radiographs is)."""
        rows = self.store._query(
            "SELECT r.* FROM results r JOIN images i ON i.image_key = r.image_key "
            "WHERE i.study_uid = ? AND r.probability IS NOT NULL AND r.id IN "
            "(SELECT MAX(id) FROM results GROUP BY image_key) ORDER BY r.probability DESC, r.id DESC LIMIT 1",
            (study_uid,),
        )
        if not rows:
            return None
        r = rows[0]
        return AiSuggestion(
            probability=float(r["probability"]),
            threshold=float(r["threshold"]),
            label=str(r["label"]),
            demo=bool(r["demo"]),
            model_name=str(r["model_name"]),
            result_id=int(r["id"]),
        )

    # -- rows ----------------------------------------------------------------------
    @staticmethod
    def _submitted(r: sqlite3.Row) -> SubmittedReading:
        try:
            reading = Reading.from_json_dict(json.loads(r["reading"]))
        except ValueError as exc:
            raise StoreError(f"reading {r['id']} is not valid JSON: {exc}") from exc
        return SubmittedReading(
            id=int(r["id"]),
            study_uid=str(r["study_uid"]),
            reader=str(r["reader"]),
            reading=reading,
            submitted_at=str(r["submitted_at"]),
            result_id=r["result_id"],
        )
