"""The Qt-free worklist: rows from session entries + readings, filters, next/previous unread."""

from __future__ import annotations

from pathlib import Path

import pytest

from pneumoview.dicom.scan import ImageRecord
from pneumoview.reading.ilo import Reading
from pneumoview.reading.rules import FinalRule, SubmittedReading
from pneumoview.results import ImageIdentity, Provenance, analysed
from pneumoview.session import Decision, ImageEntry
from pneumoview.worklist import FILTERS, build_rows, filter_rows, format_date, matches, reading_state, step_unread

CLASSES = ("pneumoconiosis", "normal")


def record(name: str, study: str, date: str, patient: str = "Miner^Ann", pid: str = "W-1") -> ImageRecord:
    return ImageRecord(
        path=Path(f"/clinic/{study}/{name}"),
        sop_instance_uid=f"{study}.{name}",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.1",
        patient_id=pid,
        patient_name=patient,
        patient_sex="M",
        patient_birth_date="19700101",
        study_uid=study,
        study_date=date,
        study_time="",
        study_description="",
        accession="",
        series_uid=f"{study}.9",
        series_number=1,
        series_description="",
        modality="CR",
        view_position="PA",
        body_part="CHEST",
        image_laterality="",
        rows=100,
        columns=100,
        photometric="MONOCHROME2",
        bits_stored=12,
        number_of_frames=1,
        pixel_spacing=None,
        transfer_syntax="1.2.840.10008.1.2.1",
    )


def entry(name: str, study: str, date: str, probability: float | None, **kw: str) -> ImageEntry:
    rec = record(name, study, date, **kw)
    identity = ImageIdentity(rec.sop_instance_uid, "ab" * 32, str(rec.path))
    result = None
    if probability is not None:
        result = analysed(identity, probability, class_names=CLASSES, demo=False, provenance=Provenance(threshold=0.5))
    return ImageEntry(key=str(rec.path), record=rec, identity=identity, result=result)


def reading(profusion: str) -> Reading:
    shapes = (
        {} if profusion.startswith("0") else {"primary_shape": "q", "secondary_shape": "q", "zones": frozenset({"RU"})}
    )
    return Reading(film_quality=1, profusion=profusion, **shapes).validate()


def sub(i: int, study: str, reader: str, profusion: str) -> SubmittedReading:
    return SubmittedReading(i, study, reader, reading(profusion), f"2026-12-01T10:00:{i:02d}Z")


@pytest.fixture()
def entries() -> list[ImageEntry]:
    return [
        entry("b.dcm", "S2", "20260302", 0.91, patient="Digger^Bo", pid="W-2"),  # AI positive
        entry("a.dcm", "S1", "20260301", 0.12),  # AI negative
        entry("c.dcm", "S3", "20260303", None, patient="Cutter^Cy", pid="W-3"),  # not analysed
        entry("d.dcm", "S3", "20260303", 0.30, patient="Cutter^Cy", pid="W-3"),
    ]


def test_rows_carry_the_columns_in_study_date_order(entries: list[ImageEntry]) -> None:
    rows = build_rows(entries, {})
    assert [r.key.rsplit("/", 1)[-1] for r in rows] == ["a.dcm", "b.dcm", "c.dcm", "d.dcm"]
    b = rows[1]
    assert (b.worker_name, b.worker_id, b.study_date, b.view) == ("Digger Bo", "W-2", "2026-03-02", "PA")
    assert b.score == pytest.approx(0.91) and b.ai_label == "pneumoconiosis" and b.ai_positive
    assert rows[2].score is None and rows[2].ai_label == "" and not rows[2].ai_positive
    assert {r.reading_status for r in rows} == {"unread"}
    assert format_date("20260302") == "2026-03-02" and format_date("2026") == "2026"


def test_reading_status_follows_the_final_rule() -> None:
    assert reading_state("S", [sub(1, "S", "ann", "0/0")]).text == "read by 1 reader"
    agree = reading_state("S", [sub(1, "S", "ann", "0/0"), sub(2, "S", "bo", "0/1")])
    assert agree.text == "final" and not agree.readers_disagree
    split = [sub(1, "S", "ann", "0/0"), sub(2, "S", "bo", "1/1")]
    assert reading_state("S", split).text == "arbitration needed" and reading_state("S", split).readers_disagree
    arbitrated = reading_state("S", split + [sub(3, "S", "cy", "1/0")])
    assert arbitrated.text == "final" and arbitrated.readers_disagree  # decided by arbitration
    # The rule is the configured one: 1/0 vs 2/1 agree on "0 vs 1+" but not on the major category.
    pair = [sub(1, "S", "ann", "1/0"), sub(2, "S", "bo", "2/1")]
    assert reading_state("S", pair).text == "final"
    assert reading_state("S", pair, FinalRule(agree_on="major")).text == "arbitration needed"


def test_filters(entries: list[ImageEntry]) -> None:
    entries[1].decision = Decision("disagree", "", "rev")  # a reviewer disagreed with the AI on a.dcm
    entries[1].judged = entries[1].result  # ... on the result on screen (no re-review needed)
    readings = {
        "S2": [sub(1, "S2", "ann", "0/0")],  # reader says 0, AI says positive: disagreement
        "S3": [sub(2, "S3", "ann", "0/0"), sub(3, "S3", "bo", "0/0")],  # final, agrees with the AI
    }
    rows = build_rows(entries, readings)
    names = lambda rs: [r.key.rsplit("/", 1)[-1] for r in rs]  # noqa: E731
    assert [f[0] for f in FILTERS] == ["all", "unread", "ai-positive", "disagreement", "needs-re-review"]
    assert names(filter_rows(rows, "all")) == ["a.dcm", "b.dcm", "c.dcm", "d.dcm"]
    assert names(filter_rows(rows, "unread")) == ["a.dcm"]  # nobody signed in: no reading at all
    assert names(filter_rows(rows, "unread", "bo")) == ["a.dcm", "b.dcm"]  # S3 is final
    assert names(filter_rows(rows, "ai-positive")) == ["b.dcm"]
    assert names(filter_rows(rows, "disagreement")) == ["a.dcm", "b.dcm"]
    assert rows[1].reader_vs_ai_disagrees and not rows[0].reader_vs_ai_disagrees and rows[0].reviewer_disagrees
    assert filter_rows(rows, "needs-re-review") == []
    with pytest.raises(ValueError, match="unknown worklist filter"):
        matches(rows[0], "nonsense")


def test_needs_re_review_comes_from_the_results_rule(entries: list[ImageEntry]) -> None:
    e = entries[0]
    judged = e.result.with_id(1)
    e.result = analysed(e.identity, 0.2, class_names=CLASSES, demo=False, provenance=Provenance(threshold=0.5)).with_id(
        2
    )
    e.decision, e.judged = Decision("agree", "", "rev", result_id=1), judged  # agreed with "positive"; now normal
    rows = build_rows(entries, {})
    assert [r.key for r in filter_rows(rows, "needs-re-review")] == [e.key]


def test_next_and_previous_unread_skip_read_and_current_studies(entries: list[ImageEntry]) -> None:
    rows = build_rows(entries, {"S2": [sub(1, "S2", "ann", "0/0")]})
    keys = {r.key.rsplit("/", 1)[-1]: r.key for r in rows}
    assert step_unread(rows, None, +1, "ann") == keys["a.dcm"]
    assert step_unread(rows, keys["a.dcm"], +1, "ann") == keys["c.dcm"]  # S2 read by ann
    assert step_unread(rows, keys["c.dcm"], +1, "ann") == keys["a.dcm"]  # wraps; d.dcm is the same study
    assert step_unread(rows, keys["a.dcm"], -1, "ann") == keys["c.dcm"]  # the study's first image
    assert step_unread(rows, keys["a.dcm"], +1, "bo") == keys["b.dcm"]
    read_all = build_rows(entries, {s: [sub(i, s, "ann", "0/0")] for i, s in enumerate(("S1", "S2", "S3"))})
    assert step_unread(read_all, None, +1, "ann") is None
    assert step_unread([], None) is None


def test_an_image_that_cannot_be_read_is_never_unread(entries: list[ImageEntry]) -> None:
    from pneumoview.dicom.suitability import Suitability

    entries[1].suitability = Suitability(False, "lateral-view", "a lateral view")  # a.dcm, study S1
    rows = build_rows(entries, {})
    a = next(r for r in rows if r.key.endswith("a.dcm"))
    assert a.ai_label == "n/a (lateral-view)" and a.score is None and not a.needs_reading_by(None)
    assert [r.key.rsplit("/", 1)[-1] for r in filter_rows(rows, "unread")] == ["b.dcm", "c.dcm", "d.dcm"]
    assert step_unread(rows, None, +1, "ann") == next(r.key for r in rows if r.key.endswith("b.dcm"))
