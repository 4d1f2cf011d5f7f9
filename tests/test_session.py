"""The Qt-free review session over a real scan and the real SQLite store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from pneumoview.dicom.scan import scan
from pneumoview.session import AnalysisResult, ResultStoreAdapter, ReviewSession, Status
from pneumoview.store import ResultStore


@pytest.fixture()
def folder(tmp_path: Path, rg1_uncompressed: Path) -> Path:
    f = tmp_path / "in"
    f.mkdir()
    os.symlink(rg1_uncompressed, f / "RG1_UNCR.dcm")
    os.symlink(get_testdata_file("CT_small.dcm"), f / "CT_small.dcm")
    (f / "junk.bin").write_bytes(b"\x00" * 50)
    return f


def _result(p: float) -> AnalysisResult:
    return AnalysisResult(probability=p, label="pneumoconiosis" if p >= 0.5 else "normal", threshold=0.5,
                          model_id="m1", model_name="test model", demo=True, device="cpu", plan="cpu fp32",
                          analysed_at="2026-11-27T20:00:00+00:00")


def test_scan_merge_statuses_and_events(folder: Path, tmp_path: Path) -> None:
    session = ReviewSession(ResultStoreAdapter(ResultStore(tmp_path / "db.sqlite3")))
    resets, problems = [], []
    session.reset.connect(resets.append)
    session.problems_changed.connect(problems.append)
    added = session.add_scan(scan([folder]))
    assert len(added) == 2 and len(resets) == 1
    assert [Path(p.path).name for p in problems[0]] == ["junk.bin"]
    # Re-opening the same folder adds nothing and repeats no problem.
    assert session.add_scan(scan([folder])) == [] and len(resets) == 1 and len(problems) == 1
    by_name = {e.path.name: e for e in session.entries.values()}
    assert by_name["RG1_UNCR.dcm"].status is Status.NOT_ANALYSED
    ct = by_name["CT_small.dcm"]
    assert ct.status is Status.UNSUPPORTED and ct.status_text() == "unsupported: unsupported-modality"
    assert session.analysable(session.entries) == [by_name["RG1_UNCR.dcm"].key]


def test_results_and_decisions_survive_a_new_session(folder: Path, tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite3"
    store = ResultStore(db)
    session = ReviewSession(ResultStoreAdapter(store))
    session.add_scan(scan([folder]))
    rg1 = next(e for e in session.entries.values() if e.path.name == "RG1_UNCR.dcm")
    changed: list[list[str]] = []
    session.entries_changed.connect(changed.append)
    session.set_results([(rg1.key, _result(0.73))])
    session.set_decision([rg1.key], "disagree", "rib shadow", "Dr Who")
    assert changed == [[rg1.key], [rg1.key]]
    assert rg1.status is Status.REVIEWED
    with pytest.raises(ValueError):
        session.set_decision([rg1.key], "maybe", "", "Dr Who")
    store.close()

    again = ReviewSession(ResultStoreAdapter(ResultStore(db)))
    again.add_scan(scan([folder]))
    entry = again.entries[rg1.key]
    assert entry.result is not None and entry.result.probability == pytest.approx(0.73)
    assert entry.result.demo and entry.result.model_name == "test model"
    assert entry.result.label_at(0.8) == "normal" and entry.result.label_at(0.7) == "pneumoconiosis"
    assert (entry.decision.decision, entry.decision.comment, entry.decision.reviewer) == (
        "disagree", "rib shadow", "Dr Who")
    rows = again.report_rows(None)
    assert [r.image_key for r in rows] == [rg1.key]
    assert rows[0].decision == "disagree" and rows[0].probability == pytest.approx(0.73)


def test_unsupported_images_are_recorded_with_their_code(folder: Path, tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "db.sqlite3")
    session = ReviewSession(ResultStoreAdapter(store))
    session.add_scan(scan([folder]))
    session.record_unsupported(list(session.entries))
    session.record_unsupported(list(session.entries))   # idempotent: no second history row
    ct = next(e for e in session.entries.values() if e.path.name == "CT_small.dcm")
    assert [r.unsupported_code for r in store.results_history(ct.key)] == ["unsupported-modality"]
    assert store.result_for(next(k for k in session.entries if k != ct.key)) is None
