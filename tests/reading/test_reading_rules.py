"""Readers, blinding, the final-determination rule and the arbitration queue (pure logic)."""

from __future__ import annotations

import dataclasses

import pytest

from pneumoview.errors import ReadingError
from pneumoview.reading.ilo import Reading, normal_reading
from pneumoview.reading.rules import (
    ARBITRATION,
    FINAL,
    PENDING,
    AiSuggestion,
    FinalRule,
    SubmittedReading,
    arbitration_queue,
    check_may_submit,
    determine,
    reader_name,
    visible_readings,
)


def reading(profusion: str = "0/0", large: str = "0") -> Reading:
    shapes = (
        {}
        if profusion in ("0/-", "0/0", "0/1")
        else {"primary_shape": "q", "secondary_shape": "q", "zones": frozenset({"RU", "LU"})}
    )
    return Reading(film_quality=1, profusion=profusion, large_opacities=large, **shapes).validate()


def sub(i: int, reader: str, r: Reading, study: str = "1.2.3") -> SubmittedReading:
    return SubmittedReading(i, study, reader, r, f"2026-12-01T10:00:{i:02d}.000000Z")


def test_reader_names_are_normalised_and_checked() -> None:
    assert reader_name("  Dr  Ada   Okafor ") == "Dr Ada Okafor"
    for bad in ("", "   ", "x" * 65, "Ada\x00"):
        with pytest.raises(ReadingError) as info:
            reader_name(bad)
        assert info.value.field == "reader"


def test_default_rule_two_readers_agree_on_0_vs_1plus_and_large_opacities() -> None:
    # 1/0 and 2/1 are both "1/2/3": agreement under the default rule
    final = determine("1.2.3", [sub(1, "A", reading("1/0")), sub(2, "B", reading("2/1"))])
    assert (final.status, final.category, final.large_opacities, final.decided_by) == (FINAL, "1+", "0", "agreement")
    assert final.positive is True and final.first_readers == ("A", "B")
    # 0/1 vs 1/0 crosses the 0 | 1 boundary: arbitration
    assert determine("1.2.3", [sub(1, "A", reading("0/1")), sub(2, "B", reading("1/0"))]).status == ARBITRATION
    # same category, different large opacities: arbitration
    assert determine("1.2.3", [sub(1, "A", reading("1/1", "A")), sub(2, "B", reading("1/1"))]).status == ARBITRATION
    assert determine("1.2.3", [sub(1, "A", reading())]).status == PENDING


def test_rule_is_configurable() -> None:
    strict = FinalRule(agree_on="major")
    pair = [sub(1, "A", reading("1/0")), sub(2, "B", reading("2/1"))]
    assert determine("1.2.3", pair, strict).status == ARBITRATION
    lenient = FinalRule.from_json_dict({"agree_on": "binary", "large_opacities": False})
    assert determine("1.2.3", [sub(1, "A", reading("1/1", "A")), sub(2, "B", reading("1/1"))], lenient).status == FINAL
    assert FinalRule.from_json_dict(strict.to_json_dict()) == strict
    with pytest.raises(ReadingError):
        FinalRule.from_json_dict({"agree_on": "exact"})
    with pytest.raises(ReadingError):
        FinalRule.from_json_dict({"agree": "binary"})


def test_third_reader_arbitrates_and_amendments_count_once() -> None:
    readings = [
        sub(1, "A", reading("0/0")),
        sub(2, "B", reading("1/1")),
        sub(3, "A", reading("0/1")),
        sub(4, "C", reading("1/2")),
    ]
    final = determine("1.2.3", readings)
    assert (final.status, final.arbiter, final.category, final.decided_by) == (FINAL, "C", "1+", "arbitration")
    # A amends to 1/0: now A and B agree, no arbitration needed; C's reading is ignored
    amended = [*readings, sub(5, "A", reading("1/0"))]
    assert determine("1.2.3", amended).decided_by == "agreement"


def test_unreadable_films() -> None:
    bad = Reading(film_quality=4, film_quality_reason="motion blur")
    assert determine("1.2.3", [sub(1, "A", bad), sub(2, "B", bad)]).category == "unreadable"
    assert determine("1.2.3", [sub(1, "A", bad), sub(2, "B", bad)]).positive is None
    assert determine("1.2.3", [sub(1, "A", bad), sub(2, "B", reading())]).status == ARBITRATION


def test_blinding() -> None:
    readings = [sub(1, "A", reading("1/0")), sub(2, "B", reading("0/0"))]
    assert visible_readings(readings, "C") == []
    assert visible_readings(readings, "A") == readings


def test_arbitration_queue_excludes_first_readers() -> None:
    by_study = {
        "s1": [sub(1, "A", reading("0/0"), "s1"), sub(2, "B", reading("1/0"), "s1")],
        "s2": [sub(3, "A", reading("0/0"), "s2"), sub(4, "B", reading("0/0"), "s2")],
        "s3": [sub(5, "A", reading("2/2"), "s3"), sub(6, "C", reading("0/0"), "s3")],
    }
    assert [f.study_uid for f in arbitration_queue(by_study)] == ["s1", "s3"]
    assert [f.study_uid for f in arbitration_queue(by_study, reader="C")] == ["s1"]
    assert arbitration_queue(by_study, reader="A") == []


def test_no_new_reader_once_final() -> None:
    final = [sub(1, "A", reading()), sub(2, "B", reading())]
    with pytest.raises(ReadingError, match="final"):
        check_may_submit(final, "C")
    check_may_submit(final, "A")  # amending one's own reading stays possible


def test_ai_suggestion_text_and_demo_mark() -> None:
    assert AiSuggestion(0.83, 0.5).text() == "AI: consistent with pneumoconiosis, 0.83 at operating point 0.50"
    assert AiSuggestion(0.2, 0.35).text() == "AI: not consistent with pneumoconiosis, 0.20 at operating point 0.35"
    assert AiSuggestion(0.9, 0.5, demo=True).text().startswith("DEMO - not a diagnosis")
    assert "ai" not in " ".join(f.name for f in dataclasses.fields(Reading)).split("_")  # no AI field on a reading
    assert normal_reading() == Reading(film_quality=1, profusion="0/0")
