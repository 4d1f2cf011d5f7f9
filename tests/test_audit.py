"""The hash-chained audit log: real SQLite, tampered with through raw sqlite3 as an attacker would."""

from __future__ import annotations

import csv
import itertools
import sqlite3
from pathlib import Path

import pytest
from store_support import save_analysed

from pneumoview import audit
from pneumoview.cli import main
from pneumoview.store import ResultStore


@pytest.fixture()
def db(tmp_path) -> Path:
    path = tmp_path / "results.sqlite3"
    with ResultStore(path) as store:
        key = save_analysed(store, "1.2.3", 0.7)
        store.save_decision(key, "agree", "clear", "Dr A")
        store.audit(audit.MODEL_ACTIVATED, actor="Dr A", detail={"bundle_fingerprint": "f" * 64})
        store.audit(audit.OPERATING_POINT_CHANGED, actor="Dr A", detail={"threshold": 0.41})
        store.audit(audit.EXPORT, actor="Dr A", detail={"rows": 1})
    return path


def tamper(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("DROP TRIGGER IF EXISTS audit_events_no_update")
        conn.execute("DROP TRIGGER IF EXISTS audit_events_no_delete")
        for statement in statements:
            conn.execute(statement)
    conn.close()


def verify_cli(path: Path, capsys) -> tuple[int, str]:
    code = main(["audit", "--db", str(path), "verify"])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_each_entry_links_to_the_previous_hash(db) -> None:
    with ResultStore(db) as store:
        entries, sequence, guards = store.audit_chain()
    assert [e.id for e in entries] == [1, 2, 3, 4, 5] and sequence == 5
    assert entries[0].prev_hash == audit.GENESIS
    for before, after in itertools.pairwise(entries):
        assert after.prev_hash == before.entry_hash
    e = entries[2]
    assert e.entry_hash == audit.entry_hash(e.id, e.at, e.kind, e.image_key, e.actor, e.detail, e.prev_hash)
    assert guards == set(audit.GUARD_TRIGGERS)


def test_intact_log_verifies(db, capsys) -> None:
    code, text = verify_cli(db, capsys)
    assert code == 0 and "intact: 5 entries" in text


def test_the_table_refuses_updates_and_deletes(db) -> None:
    conn = sqlite3.connect(db)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit_events SET actor = 'X' WHERE id = 2")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit_events WHERE id = 5")
    conn.close()


@pytest.mark.parametrize(
    ("statement", "first_bad", "words"),
    [
        ("UPDATE audit_events SET actor = 'Dr B' WHERE id = 2", 2, "edited"),
        ("UPDATE audit_events SET detail = '{\"threshold\": 0.9}' WHERE id = 4", 4, "edited"),
        ("UPDATE audit_events SET at = '2020-01-01T00:00:00.000000Z' WHERE id = 1", 1, "edited"),
        ("DELETE FROM audit_events WHERE id = 3", 3, "removed"),
        ("DELETE FROM audit_events WHERE id >= 4", 4, "removed from the end"),
        ("DELETE FROM audit_events WHERE id = 1", 1, "removed"),
        ("UPDATE audit_events SET prev_hash = entry_hash WHERE id = 3", 3, "does not chain"),
    ],
)
def test_an_edited_or_removed_entry_is_named(db, capsys, statement, first_bad, words) -> None:
    tamper(db, statement)
    code, text = verify_cli(db, capsys)
    assert code == 1
    assert f"entry {first_bad}:" in text and words in text
    assert len(text.strip().splitlines()) == 1


def test_rehashing_an_edited_entry_still_breaks_the_next_link(db, capsys) -> None:
    with ResultStore(db) as store:
        e = store.audit_chain()[0][1]
    forged = audit.entry_hash(e.id, e.at, e.kind, e.image_key, "Dr Forger", e.detail, e.prev_hash)
    tamper(db, f"UPDATE audit_events SET actor = 'Dr Forger', entry_hash = '{forged}' WHERE id = 2")
    code, text = verify_cli(db, capsys)
    assert code == 1 and "entry 3:" in text


def test_dropping_the_guard_alone_is_reported(db, capsys) -> None:
    tamper(db)
    code, text = verify_cli(db, capsys)
    assert code == 1 and "guard" in text


def test_writes_after_tampering_do_not_heal_the_chain(db, capsys) -> None:
    tamper(db, "DELETE FROM audit_events WHERE id = 5")
    with ResultStore(db) as store:
        store.audit(audit.EXPORT, detail={})
        entries = store.audit_chain()[0]
    assert [e.id for e in entries] == [1, 2, 3, 4, 6]
    assert main(["audit", "--db", str(db), "verify"]) == 1
    assert "entry 5:" in capsys.readouterr().err


def test_migrating_a_v2_database_seals_its_entries(tmp_path) -> None:
    from pneumoview.store import migrate

    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, path, target=2)
    conn.execute(
        "INSERT INTO audit_events (at, kind, actor, detail) VALUES ('2024-01-01T00:00:00Z', 'export', 'x', '{}')"
    )
    conn.close()
    with ResultStore(path) as store:
        outcome = store.verify_audit()
        entries = store.audit_chain()[0]
    assert outcome.ok and outcome.entries == 2
    assert [e.kind for e in entries] == ["export", "schema-migrated"]


def test_export_csv(db, tmp_path, capsys) -> None:
    out = tmp_path / "audit.csv"
    assert main(["audit", "--db", str(db), "export", "--csv", str(out)]) == 0
    with out.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == audit.CSV_COLUMNS
    assert [r["kind"] for r in rows] == [
        "result-saved",
        "decision-saved",
        audit.MODEL_ACTIVATED,
        audit.OPERATING_POINT_CHANGED,
        audit.EXPORT,
    ]
    assert rows[1]["prev_hash"] == rows[0]["entry_hash"]
    # The export itself is audited, and the chain stays intact.
    capsys.readouterr()
    code, text = verify_cli(db, capsys)
    assert code == 0 and "6 entries" in text


def test_missing_database_is_one_line(tmp_path, capsys) -> None:
    assert main(["audit", "--db", str(tmp_path / "none.sqlite3"), "verify"]) == 2
    assert "no results database" in capsys.readouterr().err


def test_chain_inside_a_batch(db) -> None:
    with ResultStore(db) as store, store.batch():
        store.audit(audit.EXPORT, detail={"n": 1})
        entries, sequence, _ = store.audit_chain()
        assert entries[-1].id == sequence == 6
    with ResultStore(db) as store:
        assert store.verify_audit().ok
