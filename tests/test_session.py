"""The Qt-free review session over a real scan and the real SQLite store."""

from __future__ import annotations

import os
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from pneumoview.dicom.scan import scan
from pneumoview.results import REASON_DUPLICATE_UID, ImageResult, Provenance, analysed
from pneumoview.session import ImageEntry, ResultStoreAdapter, ReviewSession, Status
from pneumoview.store import ResultStore

CLASSES = ("pneumoconiosis", "normal")


@pytest.fixture()
def folder(tmp_path: Path, rg1_uncompressed: Path) -> Path:
    f = tmp_path / "in"
    f.mkdir()
    os.symlink(rg1_uncompressed, f / "RG1_UNCR.dcm")
    os.symlink(get_testdata_file("CT_small.dcm"), f / "CT_small.dcm")
    (f / "junk.bin").write_bytes(b"\x00" * 50)
    return f


@pytest.fixture()
def twins(tmp_path: Path, rg1_uncompressed: Path, rg1_j2k: Path) -> Path:
    """RG1, a truncated copy of it, and the JPEG 2000 twin re-labelled with RG1's SOP Instance UID (as a
    re-export keeps it): three files, one UID, three different contents."""
    f = tmp_path / "twins"
    f.mkdir()
    os.symlink(rg1_uncompressed, f / "RG1_UNCR.dcm")
    (f / "RG1_cut.dcm").write_bytes(rg1_uncompressed.read_bytes()[:2_000_000])
    uid = pydicom.dcmread(rg1_uncompressed, stop_before_pixels=True).SOPInstanceUID
    j2k = pydicom.dcmread(rg1_j2k)
    j2k.SOPInstanceUID = uid
    j2k.file_meta.MediaStorageSOPInstanceUID = uid
    j2k.save_as(f / "RG1_J2K.dcm")
    return f


def _result(entry: ImageEntry, p: float, *, threshold: float = 0.5, fingerprint: str = "ab" * 32) -> ImageResult:
    assert entry.identity is not None
    return analysed(
        entry.identity,
        p,
        class_names=CLASSES,
        demo=True,
        provenance=Provenance(
            bundle_id="m1",
            bundle_name="test model",
            bundle_fingerprint=fingerprint,
            threshold=threshold,
            device="cpu",
            plan="cpu fp32",
        ),
        analysed_at="2026-11-27T20:00:00.000000Z",
    )


def _by_name(session: ReviewSession) -> dict[str, ImageEntry]:
    return {e.path.name: e for e in session.entries.values()}


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
    by_name = _by_name(session)
    assert by_name["RG1_UNCR.dcm"].status is Status.NOT_ANALYSED
    ct = by_name["CT_small.dcm"]
    assert ct.status is Status.UNSUPPORTED and ct.status_text() == "unsupported: unsupported-modality"
    assert session.analysable(session.entries) == [by_name["RG1_UNCR.dcm"].key]


def test_results_and_decisions_survive_a_new_session(folder: Path, tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite3"
    store = ResultStore(db)
    session = ReviewSession(ResultStoreAdapter(store))
    session.add_scan(scan([folder]))
    rg1 = _by_name(session)["RG1_UNCR.dcm"]
    changed: list[list[str]] = []
    session.entries_changed.connect(changed.append)
    session.set_results([(rg1.key, _result(rg1, 0.73))])
    session.set_decision([rg1.key], "disagree", "rib shadow", "Dr Who")
    assert changed == [[rg1.key], [rg1.key]]
    assert rg1.status is Status.REVIEWED and rg1.decision.result_id == rg1.result.id is not None
    with pytest.raises(ValueError):
        session.set_decision([rg1.key], "maybe", "", "Dr Who")
    store.close()

    again = ReviewSession(ResultStoreAdapter(ResultStore(db)))
    again.add_scan(scan([folder]))
    entry = again.entries[rg1.key]
    assert entry.result is not None and entry.result.probability == pytest.approx(0.73)
    assert entry.result.demo and entry.result.provenance.bundle_name == "test model"
    assert entry.result.label_at(0.8) == "normal" and entry.result.label_at(0.7) == "pneumoconiosis"
    assert (entry.decision.decision, entry.decision.comment, entry.decision.reviewer) == (
        "disagree",
        "rib shadow",
        "Dr Who",
    )
    assert entry.status is Status.REVIEWED
    rows = again.report_rows(None)
    assert [r.result.key for r in rows] == [rg1.image_key]
    assert rows[0].decision == "disagree" and rows[0].result.probability == pytest.approx(0.73)


def test_unsupported_images_are_recorded_with_their_code(folder: Path, tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "db.sqlite3")
    session = ReviewSession(ResultStoreAdapter(store))
    session.add_scan(scan([folder]))
    session.record_unsupported(list(session.entries))
    session.record_unsupported(list(session.entries))  # idempotent: no second history row
    by_name = _by_name(session)
    ct = by_name["CT_small.dcm"]
    assert [r.reason_code for r in store.results_history(ct.image_key)] == ["unsupported-modality"]
    assert store.result_for(by_name["RG1_UNCR.dcm"].image_key) is None


def test_files_sharing_a_uid_are_all_listed_and_never_share_a_result(twins: Path, tmp_path: Path) -> None:
    """Issue 8: a truncated copy and the J2K twin must not inherit RG1's score or decision."""
    db = tmp_path / "db.sqlite3"
    session = ReviewSession(ResultStoreAdapter(ResultStore(db)))
    problems: list = []
    session.problems_changed.connect(problems.extend)
    session.add_scan(scan([twins]))
    by_name = _by_name(session)
    assert set(by_name) == {"RG1_UNCR.dcm", "RG1_cut.dcm", "RG1_J2K.dcm"}  # all listed
    good, cut, j2k = by_name["RG1_UNCR.dcm"], by_name["RG1_cut.dcm"], by_name["RG1_J2K.dcm"]
    assert good.record.sop_instance_uid == cut.record.sop_instance_uid == j2k.record.sop_instance_uid
    assert len({good.image_key, cut.image_key, j2k.image_key}) == 3
    dup = [p for p in problems if p.code == REASON_DUPLICATE_UID]
    assert sorted(Path(p.path).name for p in dup) == ["RG1_J2K.dcm", "RG1_UNCR.dcm", "RG1_cut.dcm"]
    assert sorted(Path(p).name for p in good.duplicates) == ["RG1_J2K.dcm", "RG1_cut.dcm"]

    session.set_results([(good.key, _result(good, 0.9))])
    session.set_decision([good.key], "agree", "", "Dr A")
    assert cut.result is None and cut.decision is None and j2k.result is None and j2k.decision is None
    rows = session.report_rows([cut.key, good.key])
    assert [Path(r.path).name for r in rows] == ["RG1_UNCR.dcm"]  # the cut file has nothing to report
    assert sorted(Path(p).name for p in rows[0].duplicates) == ["RG1_J2K.dcm", "RG1_cut.dcm"]

    again = ReviewSession(ResultStoreAdapter(ResultStore(db)))  # after a restart too
    again.add_scan(scan([twins]))
    names = _by_name(again)
    assert names["RG1_UNCR.dcm"].decision is not None and names["RG1_UNCR.dcm"].result.probability == 0.9
    assert names["RG1_cut.dcm"].result is None and names["RG1_cut.dcm"].decision is None
    assert names["RG1_J2K.dcm"].result is None and names["RG1_J2K.dcm"].decision is None


def test_agree_needs_re_review_after_a_model_change_and_after_a_threshold_flip(folder: Path, tmp_path: Path) -> None:
    session = ReviewSession(ResultStoreAdapter(ResultStore(tmp_path / "db.sqlite3")))
    session.add_scan(scan([folder]))
    rg1 = _by_name(session)["RG1_UNCR.dcm"]
    session.set_results([(rg1.key, _result(rg1, 0.6))])
    session.set_decision([rg1.key], "agree", "", "Dr A")
    assert rg1.status is Status.REVIEWED
    session.set_results([(rg1.key, _result(rg1, 0.6, threshold=0.7))])  # the label flips to normal
    assert rg1.status is Status.NEEDS_REVIEW and rg1.review_status == "needs re-review"
    (row,) = session.report_rows([rg1.key])
    assert row.decision == "agree" and row.review_status == "needs re-review" and row.result.label == "normal"
    session.set_decision([rg1.key], "agree", "", "Dr A")  # looked at again
    assert rg1.status is Status.REVIEWED
    session.set_results([(rg1.key, _result(rg1, 0.6, threshold=0.7, fingerprint="cd" * 32))])  # another model
    assert rg1.status is Status.NEEDS_REVIEW
    again = ReviewSession(ResultStoreAdapter(session.store.store))  # the database says the same
    again.add_scan(scan([folder]))
    assert again.entries[rg1.key].status is Status.NEEDS_REVIEW


def test_analyse_all_takes_only_images_without_a_current_result(
    folder: Path, tmp_path: Path, rg1_uncompressed: Path
) -> None:
    f = folder
    (f / "copy2.dcm").write_bytes(rg1_uncompressed.read_bytes()[:-10])  # another file with RG1's UID
    session = ReviewSession(ResultStoreAdapter(ResultStore(tmp_path / "db.sqlite3")))
    session.add_scan(scan([f]))
    by_name = _by_name(session)
    rg1, other = by_name["RG1_UNCR.dcm"], by_name["copy2.dcm"]
    assert sorted(session.without_current_result(session.entries)) == sorted([rg1.key, other.key])
    session.set_results([(rg1.key, _result(rg1, 0.6))])
    assert session.without_current_result(session.entries) == [other.key]  # CT is never analysable
    session.set_decision([rg1.key], "agree", "", "Dr A")
    keys = list(session.entries)
    assert session.decisions_at_stake(keys, "ab" * 32) == 0  # the same model again: nothing at stake
    assert session.decisions_at_stake(keys, "ef" * 32) == 1  # another model: one decision to re-review
    assert session.decisions_at_stake(keys, None) == 1  # model not known yet: counted


def test_an_unchanged_file_is_not_read_again_to_hash_it(folder: Path, tmp_path: Path, rg1_uncompressed: Path) -> None:
    import sqlite3

    from pneumoview.results import identify

    db = tmp_path / "db.sqlite3"
    f = tmp_path / "own"
    f.mkdir()
    (f / "rg1.dcm").write_bytes(rg1_uncompressed.read_bytes())
    first = ReviewSession(ResultStoreAdapter(ResultStore(db)))
    first.add_scan(scan([f]))
    (entry,) = first.entries.values()
    real = identify(entry.key, entry.record.sop_instance_uid)
    assert entry.identity == real and entry.file_stamp
    # Mark the stored hash: a second session that takes it from the database (stamp unchanged) shows the mark.
    marked = "e" * 64
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE images SET content_sha256 = ?", (marked,))
    second = ReviewSession(ResultStoreAdapter(ResultStore(db)))
    second.add_scan(scan([f]))
    assert next(iter(second.entries.values())).identity.content_sha256 == marked
    # Touch the file (new modification time): it is hashed again.
    os.utime(f / "rg1.dcm", ns=(1_000_000_000, 1_000_000_000))
    third = ReviewSession(ResultStoreAdapter(ResultStore(db)))
    third.add_scan(scan([f]))
    assert next(iter(third.entries.values())).identity == real


def test_pictures_have_no_uid_and_are_never_duplicates(tmp_path: Path, shared_data: Path) -> None:
    """PNG/JPEG pictures: key ``-|<sha256>``; an empty SOP Instance UID is never shared (no duplicate-uid),
    a byte-identical copy is the same image, and a result survives a restart."""
    f = tmp_path / "pictures"
    f.mkdir()
    first, second = sorted((shared_data / "cxr" / "images").glob("*.png"))[:2]
    os.symlink(first, f / "a.png")
    os.symlink(second, f / "b.png")
    os.symlink(first, f / "a_copy.png")
    db = tmp_path / "db.sqlite3"
    session = ReviewSession(ResultStoreAdapter(ResultStore(db)))
    session.add_scan(scan([f], pictures=True))
    entries = {Path(k).name: e for k, e in session.entries.items()}
    assert sorted(entries) == ["a.png", "a_copy.png", "b.png"] and session.problems == []
    assert all(e.image_key and e.image_key.startswith("-|") for e in entries.values())
    assert entries["a.png"].image_key == entries["a_copy.png"].image_key != entries["b.png"].image_key
    key = next(k for k, e in session.entries.items() if Path(k).name == "b.png")
    result = analysed(
        entries["b.png"].identity, 0.7, class_names=CLASSES, demo=False, provenance=Provenance(threshold=0.5)
    )
    session.set_results([(key, result)])
    again = ReviewSession(ResultStoreAdapter(ResultStore(db)))
    again.add_scan(scan([f], pictures=True))
    assert again.problems == []  # the stored pictures are not "same UID" as each other either
    assert again.entries[key].result is not None and again.entries[key].result.probability == 0.7
