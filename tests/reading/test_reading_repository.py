"""Readings in the real SQLite results store: per reader, timestamps, blinding, queue, AI suggestion."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from reading_support import add_study

from pneumoview.errors import ReadingError, ReadingValidationError, StoreError
from pneumoview.reading.ilo import Reading, normal_reading
from pneumoview.reading.repository import ReadingRepository
from pneumoview.reading.rules import ARBITRATION, FINAL
from pneumoview.store import MIGRATIONS, SCHEMA_VERSION, ResultStore, migrate


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ResultStore]:
    """A real SQLite results store in a temporary folder (no conftest here: the name would shadow the
    top-level ``conftest`` that other tests import by name)."""
    with ResultStore(tmp_path / "results.sqlite3") as s:
        yield s


@pytest.fixture
def repo(store: ResultStore) -> ReadingRepository:
    return ReadingRepository(store)


POSITIVE = Reading(
    film_quality=1, profusion="1/1", primary_shape="q", secondary_shape="q", zones=frozenset({"RU", "LU"})
)


def test_readings_are_stored_per_reader_with_timestamps_and_history(
    repo: ReadingRepository, store: ResultStore
) -> None:
    add_study(store, "1.2.840.1")
    a = repo.sign_in(" Ada  Okafor ")
    assert a == "Ada Okafor" and repo.sign_in("Ada Okafor") == a and repo.readers() == ["Ada Okafor"]
    first = repo.submit("1.2.840.1", a, normal_reading())
    second = repo.submit("1.2.840.1", a, POSITIVE, submitted_at="2026-12-01T12:00:00.000000Z")
    assert first.submitted_at.endswith("Z") and second.submitted_at == "2026-12-01T12:00:00.000000Z"
    assert [r.reading for r in repo.readings_for("1.2.840.1")] == [normal_reading(), POSITIVE]
    assert repo.latest_of("1.2.840.1", a) == second
    assert [e.kind for e in store.audit_events(kind="reading-submitted")] == ["reading-submitted"] * 2


def test_submit_refuses_invalid_or_unsigned(repo: ReadingRepository, store: ResultStore) -> None:
    with pytest.raises(ReadingError, match="not signed in"):
        repo.submit("1.2.3", "Nobody", normal_reading())
    repo.sign_in("Ada")
    with pytest.raises(ReadingValidationError):
        repo.submit("1.2.3", "Ada", Reading(film_quality=1, profusion="0/0", primary_shape="p"))
    with pytest.raises(ReadingError, match="Study Instance UID"):
        repo.submit("", "Ada", normal_reading())
    assert repo.all_readings() == []


def test_blinding_final_rule_and_arbitration_queue(repo: ReadingRepository) -> None:
    for name in ("Ada", "Ben", "Cy"):
        repo.sign_in(name)
    repo.submit("s1", "Ada", normal_reading())
    assert repo.visible_to("s1", "Ben") == []  # Ben has not read s1 yet
    repo.submit("s1", "Ben", POSITIVE)
    assert [r.reader for r in repo.visible_to("s1", "Ben")] == ["Ada", "Ben"]
    assert repo.final("s1").status == ARBITRATION
    assert [f.study_uid for f in repo.arbitration_queue()] == ["s1"]
    assert repo.arbitration_queue(reader="Ada") == []
    repo.submit("s1", "Cy", POSITIVE)
    final = repo.final("s1")
    assert (final.status, final.arbiter, final.category) == (FINAL, "Cy", "1+")
    assert repo.arbitration_queue() == []


def test_ai_suggestion_is_kept_apart_from_the_reading(repo: ReadingRepository, store: ResultStore) -> None:
    add_study(store, "s1", 0.83, n_images=2)  # results 0.83 and 0.73: the highest counts
    ai = repo.ai_suggestion("s1")
    assert ai is not None and ai.probability == pytest.approx(0.83) and ai.result_id is not None
    assert ai.text() == "AI: consistent with pneumoconiosis, 0.83 at operating point 0.50"
    repo.sign_in("Ada")
    submitted = repo.submit("s1", "Ada", normal_reading(), ai=ai)
    assert submitted.result_id == ai.result_id
    assert repo.readings_for("s1")[0].reading == normal_reading()  # the reader's 0/0 stands
    raw = store._query("SELECT reading FROM readings")[0]["reading"]
    assert "0.83" not in raw and "probab" not in raw
    assert repo.ai_suggestion("unknown") is None


def test_the_readings_migration_upgrades_an_older_database(tmp_path: Path) -> None:
    # the version just before the migration that adds the readings (the lead may renumber migrations)
    before = next(i for i, m in enumerate(MIGRATIONS) if any("CREATE TABLE readings" in s for s in m))
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, path, target=before)
    conn.close()
    with ResultStore(path) as s:
        assert s.previous_schema_version == before and s.schema_version == SCHEMA_VERSION
        repo = ReadingRepository(s)
        repo.sign_in("Ada")
        repo.submit("s1", "Ada", normal_reading())
        assert len(repo.all_readings()) == 1
    assert (tmp_path / f"old.sqlite3.v{before}.bak").exists()
    tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"readers", "readings"} <= tables


def test_a_corrupt_stored_reading_is_an_error_not_a_crash(repo: ReadingRepository, store: ResultStore) -> None:
    repo.sign_in("Ada")
    with store._write() as conn:
        conn.execute("INSERT INTO readings (study_uid, reader, reading, submitted_at) VALUES ('s', 'Ada', '{bad', 't')")
    with pytest.raises(StoreError, match="not valid JSON"):
        repo.readings_for("s")
