"""The SQLite results store: schema, history, threads, migration, and crash safety (real SQLite)."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pneumoview import paths
from pneumoview.errors import StoreError
from pneumoview.results import NOT_ANALYSED, REVIEW_CURRENT, REVIEW_NEEDED, ImageIdentity, Provenance, analysed, failed
from pneumoview.store import MIGRATIONS, SCHEMA_VERSION, ImageInfo, ResultStore

REPO_ROOT = Path(__file__).resolve().parents[1]


def _info(key: str, folder: str = "/data/clinic", content: str = "", **fields: str) -> ImageInfo:
    base = dict(
        patient_id=f"PID-{key}",
        patient_name=f"Doe^{key}",
        study_uid=f"1.2.{key}",
        study_date="20240102",
        accession=f"ACC{key}",
        view_position="PA",
        modality="CR",
        body_part="CHEST",
    )
    base.update(fields)
    identity = ImageIdentity(
        f"1.2.840.{key}", hashlib.sha256((content or key).encode()).hexdigest(), f"{folder}/{key}.dcm"
    )
    return ImageInfo(
        image_key=identity.key,
        path=identity.path,
        sop_instance_uid=identity.sop_instance_uid,
        content_sha256=identity.content_sha256,
        **base,
    )


def _prov(threshold: float = 0.5, fingerprint: str = "ab" * 32, **kw: object) -> Provenance:
    return Provenance(
        bundle_id="m1",
        bundle_name="pneumollm-tiny",
        bundle_fingerprint=fingerprint,
        threshold=threshold,
        software_version="0.1.0",
        **kw,
    )


def _result(store: ResultStore, info: ImageInfo, probability: float = 0.8, **kw: object):
    return store.save(
        analysed(
            info.identity, probability, class_names=("pneumoconiosis", "normal"), demo=False, provenance=_prov(**kw)
        ),
        info,
    )


@pytest.fixture
def store(tmp_path: Path):
    with ResultStore(tmp_path / "db.sqlite3") as s:
        yield s


def test_default_location_follows_pneumoview_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path / "home"))
    with ResultStore() as s:
        assert s.path == tmp_path / "home" / "data" / "pneumoview.sqlite3"
    assert s.path.is_file()
    if os.name == "posix":
        assert s.path.parent.stat().st_mode & 0o077 == 0  # patient data: the new folder is private


def test_fresh_database_is_wal_versioned_with_foreign_keys(store: ResultStore) -> None:
    assert store.journal_mode == "wal"
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"images", "results", "decisions", "audit_events"} <= tables
    conn.close()
    assert store._connection().execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store._connection().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_results_and_decisions_keep_history_latest_wins(store: ResultStore) -> None:
    info = _info("1")
    first = _result(store, info, 0.81, plan="cpu fp32", device="cpu")
    d1 = store.save_decision(info.image_key, "agree", "nodules upper zones", "Dr A")
    second = _result(store, info, 0.12)
    d2 = store.save_decision(info.image_key, "disagree", "", "Dr B")
    assert store.result_for(info.image_key) == second
    assert [r.probability for r in store.results_history(info.image_key)] == [0.81, 0.12]
    assert first.provenance.plan == "cpu fp32" and first.provenance.device == "cpu" and second.label == "normal"
    assert store.decision_for(info.image_key) == d2
    assert [d.decision for d in store.decision_history(info.image_key)] == ["agree", "disagree"]
    assert d1.result_id == first.id and d2.result_id == second.id  # what the reviewer was looking at
    kinds = [e.kind for e in store.audit_events()]
    assert kinds == ["decision-saved", "result-saved", "decision-saved", "result-saved"]
    assert store.audit_events(kind="decision-saved")[0].actor == "Dr B"


def test_restart_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    with ResultStore(path) as s:
        info = _info("7")
        saved = _result(s, info, 0.66)
        decision = s.save_decision(info.image_key, "uncertain", "poor inspiration", "Dr C")
    with ResultStore(path) as s:
        assert s.previous_schema_version == SCHEMA_VERSION
        assert s.result_for(info.image_key) == saved
        assert s.decision_for(info.image_key) == decision
        assert s.image(info.image_key) == info


def test_unsupported_images_are_recorded_with_their_reason(store: ResultStore) -> None:
    info = _info("9", view_position="LL")
    r = store.save(failed(info.identity, "lateral-view", "lateral views are not analysed", status=NOT_ANALYSED), info)
    assert r.status == NOT_ANALYSED and r.probability is None and r.label == ""
    assert store.result_for(info.image_key).reason == "lateral views are not analysed"


def test_a_result_for_another_image_or_an_unknown_one_is_refused(store: ResultStore) -> None:
    info, other = _info("2"), _info("2b")
    result = analysed(info.identity, 0.4, class_names=("pneumoconiosis", "normal"), demo=False, provenance=_prov())
    with pytest.raises(StoreError, match="does not match"):
        store.save(result, other)
    with pytest.raises(StoreError, match="unknown image"):
        store.save(result)
    assert store.image(info.image_key) is None and store.image(other.image_key) is None


def test_unknown_images_and_bad_decisions_raise_store_error(store: ResultStore) -> None:
    with pytest.raises(StoreError, match="unknown image"):
        store.save_decision("nope", "agree")
    info = _info("3")
    saved = _result(store, info)
    with pytest.raises(StoreError, match="decision must be one of"):
        store.save_decision(info.image_key, "maybe")
    other = _info("3b")
    other_result = _result(store, other)
    with pytest.raises(StoreError, match="is not a result of image"):  # a decision never binds to another file
        store.save_decision(info.image_key, "agree", result_id=other_result.id)
    assert store.decision_for(info.image_key) is None
    assert store.save_decision(info.image_key, "agree", result_id=saved.id).result_id == saved.id


def test_states_and_reopening_a_folder(store: ResultStore) -> None:
    inside = [_info(str(i), folder="/data/clinic/2024") for i in range(3)]
    sibling = _info("s", folder="/data/clinic/2024-old")  # same prefix, different folder
    for info in inside + [sibling]:
        _result(store, info)
    store.save_decision(inside[1].image_key, "agree", "", "Dr A")
    under = store.images_under("/data/clinic/2024")
    assert [i.image_key for i in under] == [i.image_key for i in inside]
    states = store.states([i.image_key for i in inside] + ["unknown"])
    assert set(states) == {i.image_key for i in inside}
    assert states[inside[1].image_key].decision.decision == "agree"
    assert states[inside[0].image_key].decision is None
    assert states[inside[2].image_key].result.probability == 0.8


def test_states_handles_more_keys_than_one_query_allows(store: ResultStore) -> None:
    infos = [_info(str(i)) for i in range(1200)]
    store.upsert_images(infos)
    assert len(store.states(i.image_key for i in infos)) == 1200


def test_study_decision_covers_every_image_of_the_study(store: ResultStore) -> None:
    a = _info("a", study_uid="1.2.3.study")
    b = _info("b", study_uid="1.2.3.study")
    other = _info("c", study_uid="9.9")
    for info in (a, b, other):
        _result(store, info)
    decisions = store.save_study_decision("1.2.3.study", "disagree", "both views normal", "Dr D")
    assert sorted(d.image_key for d in decisions) == sorted([a.image_key, b.image_key])
    assert store.decision_for(other.image_key) is None
    with pytest.raises(StoreError):
        store.save_study_decision("no-such-study", "agree")


def test_report_rows_follow_the_selection(store: ResultStore) -> None:
    a, b, c = _info("a"), _info("b"), _info("c")
    for info in (a, b):
        _result(store, info)
    store.upsert_images([c])  # scanned but never analysed nor reviewed: not a report row
    store.save_decision(b.image_key, "agree", "fine", "Dr E")
    assert [r.result.key for r in store.report_rows()] == [a.image_key, b.image_key]
    rows = store.report_rows([b.image_key, c.image_key])
    assert len(rows) == 1 and rows[0].decision == "agree" and rows[0].comment == "fine" and rows[0].reviewer == "Dr E"


def test_concurrent_writers_and_readers_from_threads(store: ResultStore) -> None:
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            for i in range(40):
                info = _info(f"{t}-{i}")
                _result(store, info, (i % 10) / 10)
                store.save_decision(info.image_key, "agree", "", f"thread {t}")
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(60):
                store.report_rows()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.report_rows()) == 160
    assert store.integrity_check() == "ok"


def test_two_processes_share_one_database(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    with ResultStore(path) as a, ResultStore(path) as b:
        info = _info("x")
        _result(a, info)
        b.save_decision(info.image_key, "agree", "", "Dr F")
        assert a.decision_for(info.image_key).reviewer == "Dr F"


def test_closed_store_refuses_work(tmp_path: Path) -> None:
    s = ResultStore(tmp_path / "db.sqlite3")
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.result_for("x")


def test_a_file_that_is_not_a_database_raises_store_error(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    path.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(StoreError) as info:
        ResultStore(path)
    assert info.value.path == path


def test_a_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    with ResultStore(path):
        pass
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        ResultStore(path)


# Frozen copy of the released v1 schema. MIGRATIONS is append-only: if this test fails because
# MIGRATIONS[0] changed, restore it and put the change in a new migration instead.
V1_SCHEMA = (
    """CREATE TABLE images (image_key TEXT PRIMARY KEY, path TEXT NOT NULL,
       sop_instance_uid TEXT NOT NULL DEFAULT '', patient_id TEXT NOT NULL DEFAULT '', patient_name TEXT NOT NULL DEFAULT '',
       study_uid TEXT NOT NULL DEFAULT '', study_date TEXT NOT NULL DEFAULT '', accession TEXT NOT NULL DEFAULT '',
       view_position TEXT NOT NULL DEFAULT '', first_seen TEXT NOT NULL, updated_at TEXT NOT NULL)""",
    """CREATE TABLE results (id INTEGER PRIMARY KEY AUTOINCREMENT,
       image_key TEXT NOT NULL REFERENCES images(image_key) ON DELETE CASCADE,
       model_id TEXT NOT NULL DEFAULT '', model_name TEXT NOT NULL DEFAULT '', model_version TEXT NOT NULL DEFAULT '',
       model_fingerprint TEXT NOT NULL DEFAULT '', probability REAL, threshold REAL, label TEXT NOT NULL DEFAULT '',
       demo INTEGER NOT NULL DEFAULT 0, unsupported_code TEXT NOT NULL DEFAULT '', unsupported_reason TEXT NOT NULL DEFAULT '',
       analysed_at TEXT NOT NULL)""",
    """CREATE TABLE decisions (id INTEGER PRIMARY KEY AUTOINCREMENT,
       image_key TEXT NOT NULL REFERENCES images(image_key) ON DELETE CASCADE,
       decision TEXT NOT NULL CHECK (decision IN ('agree', 'disagree', 'uncertain')),
       comment TEXT NOT NULL DEFAULT '', reviewer TEXT NOT NULL DEFAULT '', reviewed_at TEXT NOT NULL)""",
    "CREATE INDEX results_by_image ON results(image_key, id)",
    "CREATE INDEX decisions_by_image ON decisions(image_key, id)",
)


def _normalise(sql: str) -> str:
    return " ".join(sql.replace("(", " ( ").replace(")", " ) ").replace(",", " , ").split())


def _v1_database(path: Path) -> sqlite3.Connection:
    """A new database at ``path`` with the released v1 schema (``user_version`` 1), still open."""
    conn = sqlite3.connect(path)
    for statement in V1_SCHEMA:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    return conn


def test_released_v1_migration_is_unchanged() -> None:
    assert [_normalise(s) for s in MIGRATIONS[0]] == [_normalise(s) for s in V1_SCHEMA]


def test_a_v1_database_is_migrated_to_the_current_schema(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = _v1_database(path)
    conn.execute(
        "INSERT INTO images (image_key, path, patient_id, study_uid, view_position, first_seen, updated_at) "
        "VALUES ('1.2.3', '/old/a.dcm', 'P1', '9.8', 'PA', '2025-01-01T00:00:00Z', '2025-01-01T00:00:00Z')"
    )
    conn.execute(
        "INSERT INTO results (image_key, model_name, probability, threshold, label, analysed_at) "
        "VALUES ('1.2.3', 'pneumollm', 0.7, 0.5, 'pneumoconiosis', '2025-01-01T00:00:01Z')"
    )
    conn.execute(
        "INSERT INTO decisions (image_key, decision, comment, reviewer, reviewed_at) "
        "VALUES ('1.2.3', 'agree', 'old comment', 'Dr Old', '2025-01-02T00:00:00Z')"
    )
    conn.commit()
    conn.close()

    with ResultStore(path) as s:
        assert s.previous_schema_version == 1
        assert s._connection().execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        result = s.result_for("1.2.3")  # old rows stay readable under their old key
        assert result.probability == 0.7 and result.label == "pneumoconiosis" and result.status == "analysed"
        assert result.provenance.plan == "unknown (recorded before schema v2)" and result.provenance.device == ""
        decision = s.decision_for("1.2.3")
        assert decision.comment == "old comment" and decision.result_id is None
        assert s.image("1.2.3").modality == ""  # new column, default
        assert [e.detail for e in s.audit_events(kind="schema-migrated")] == [{"from": 1, "to": SCHEMA_VERSION}]
        # the new schema works on migrated data
        s.save_decision("1.2.3", "uncertain", "second look", "Dr New")
        assert s.decision_for("1.2.3").result_id == result.id
        assert s.integrity_check() == "ok"
    backup = tmp_path / "old.sqlite3.v1.bak"
    assert backup.is_file()
    bconn = sqlite3.connect(backup)
    assert bconn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert bconn.execute("SELECT comment FROM decisions").fetchall() == [("old comment",)]
    bconn.close()


CHILD = r"""
import sys
from pneumoview.results import ImageIdentity, Provenance, analysed
from pneumoview.store import ImageInfo, ResultStore
store = ResultStore(sys.argv[1])
i = 0
while True:
    identity = ImageIdentity(f"1.{i}", f"{i:064x}", f"/d/{i}.dcm")
    info = ImageInfo(image_key=identity.key, path=identity.path, sop_instance_uid=identity.sop_instance_uid,
                     content_sha256=identity.content_sha256, patient_id=f"P{i}", patient_name="X" * 2000)
    store.save(analysed(identity, 0.5, class_names=("pneumoconiosis", "normal"), demo=False,
                        provenance=Provenance(bundle_name="m", threshold=0.5)), info)
    store.save_decision(info.image_key, "agree", "c" * 3000, "r")
    print(i, flush=True)  # printed only after both transactions committed
    i += 1
"""


@pytest.mark.slow
def test_killing_a_writer_mid_write_leaves_a_consistent_database(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True, env=env)
    committed = -1
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    for line in proc.stdout:
        committed = int(line)
        if committed >= 150 or time.monotonic() > deadline:
            break
    os.kill(proc.pid, signal.SIGKILL)  # in the middle of the next transaction, most likely
    proc.wait()
    for line in proc.stdout:  # lines printed before the kill landed
        committed = int(line)
    assert committed >= 20, "the child wrote too little to test anything"

    with ResultStore(path) as s:
        assert s.integrity_check() == "ok"
        keys = {f"1.{i}|{i:064x}" for i in range(committed + 1)}
        states = s.states(keys)
        assert set(states) == keys
        assert all(st.result is not None and st.decision is not None for st in states.values())
        fk = s._connection().execute("PRAGMA foreign_key_check").fetchall()
        assert fk == []


def test_batch_commits_together_or_not_at_all(store: ResultStore) -> None:
    infos = [_info(f"b{i}") for i in range(5)]
    with store.batch():
        for info in infos[:3]:
            _result(store, info)
        # another connection does not see the uncommitted batch
        other = sqlite3.connect(store.path)
        assert other.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 0
        with pytest.raises(StoreError):  # a failed write inside the batch undoes only itself
            store.save_decision(infos[0].image_key, "maybe")
        with pytest.raises(StoreError):
            store.save_decision("unknown", "agree")
        store.save_decision(infos[0].image_key, "agree", "", "Dr G")
    assert other.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 3
    assert other.execute("SELECT COUNT(*) FROM decisions").fetchone()[0] == 1
    other.close()

    with pytest.raises(RuntimeError):
        with store.batch():
            _result(store, infos[3])
            with store.batch():  # nested batches join the outer one
                _result(store, infos[4])
            raise RuntimeError("analysis cancelled half-way")
    assert store.result_for(infos[3].image_key) is None and store.result_for(infos[4].image_key) is None
    _result(store, infos[3])  # the store is usable after a rolled-back batch
    assert store.result_for(infos[3].image_key) is not None


def test_an_old_row_is_claimed_by_the_file_at_its_path_with_its_uid_only(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = _v1_database(path)
    conn.execute(
        "INSERT INTO images (image_key, path, sop_instance_uid, first_seen, updated_at) "
        "VALUES ('1.2.840.7', '/data/clinic/7.dcm', '1.2.840.7', '2025-01-01T00:00:00Z', '2025-01-01T00:00:00Z')"
    )
    conn.execute(
        "INSERT INTO results (image_key, probability, threshold, label, analysed_at) "
        "VALUES ('1.2.840.7', 0.7, 0.5, 'pneumoconiosis', '2025-01-01T00:00:01Z')"
    )
    conn.execute(
        "INSERT INTO decisions (image_key, decision, reviewer, reviewed_at) "
        "VALUES ('1.2.840.7', 'agree', 'Dr Old', '2025-01-02T00:00:00Z')"
    )
    conn.commit()
    conn.close()
    with ResultStore(path) as s:
        elsewhere = _info("7", folder="/data/copies", content="other")  # same UID, other path: not the judged file
        s.upsert_images([elsewhere])
        assert s.result_for(elsewhere.image_key) is None and s.result_for("1.2.840.7") is not None
        here = _info("7")
        s.upsert_images([here])
        assert s.result_for("1.2.840.7") is None and s.image("1.2.840.7") is None
        assert s.result_for(here.image_key).probability == 0.7
        assert s.decision_for(here.image_key).reviewer == "Dr Old"
        state = s.states([here.image_key])[here.image_key]
        assert state.review_status == REVIEW_NEEDED  # decided before decisions were bound to a result
        assert s.integrity_check() == "ok"


def test_decision_needs_re_review_after_a_model_change_or_a_label_flip(store: ResultStore) -> None:
    info = _info("r")
    judged = _result(store, info, 0.6)
    store.save_decision(info.image_key, "agree", "", "Dr R")
    assert store.states([info.image_key])[info.image_key].review_status == REVIEW_CURRENT
    _result(store, info, 0.6)  # same model, same label: still current
    assert store.states([info.image_key])[info.image_key].review_status == REVIEW_CURRENT
    _result(store, info, 0.6, threshold=0.7)  # threshold flips the label
    state = store.states([info.image_key])[info.image_key]
    assert state.review_status == REVIEW_NEEDED and state.judged == judged and state.result.label == "normal"
    (row,) = store.report_rows([info.image_key])
    assert row.decision == "agree" and row.review_status == REVIEW_NEEDED
    store.save_decision(info.image_key, "agree", "", "Dr R")  # reviewed again: current
    assert store.states([info.image_key])[info.image_key].review_status == REVIEW_CURRENT
    _result(store, info, 0.6, fingerprint="cd" * 32)  # another model, same label
    assert store.states([info.image_key])[info.image_key].review_status == REVIEW_NEEDED


def test_files_sharing_a_uid_are_separate_images_and_listed_as_duplicates(store: ResultStore) -> None:
    good = _info("5", content="good bytes")
    cut = _info("5", folder="/data/other", content="truncated bytes")
    assert good.sop_instance_uid == cut.sop_instance_uid and good.image_key != cut.image_key
    _result(store, good, 0.9)
    store.save_decision(good.image_key, "agree", "", "Dr S")
    store.upsert_images([cut])
    assert store.result_for(cut.image_key) is None and store.decision_for(cut.image_key) is None
    assert store.duplicates([good, cut]) == {good.image_key: [cut.path], cut.image_key: [good.path]}
    (row,) = store.report_rows()
    assert row.path == good.path and row.duplicates == (cut.path,)


def test_a_full_disk_is_a_store_error_that_says_so(store: ResultStore) -> None:
    conn = store._connection()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own SQLITE_FULL, as on a full disk
    with pytest.raises(StoreError, match="^disk full") as info:
        for i in range(200):
            _result(store, _info(f"full{i}"))
    assert info.value.path == store.path and not isinstance(info.value, sqlite3.Error)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions, not root")
def test_a_read_only_database_is_a_store_error_that_says_so(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    with ResultStore(path) as s:
        s.upsert_images([_info("ro")])
    path.chmod(0o444)
    try:
        with ResultStore(path) as s, pytest.raises(StoreError, match="read-only"):
            _result(s, _info("ro"))
    finally:
        path.chmod(0o644)
