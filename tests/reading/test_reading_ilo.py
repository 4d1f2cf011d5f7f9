"""The ILO 2022 classification as data: validation rules and the JSON round trip."""

from __future__ import annotations

import dataclasses
import json

import pytest

from pneumoview.errors import PneumoViewError, ReadingValidationError
from pneumoview.reading.ilo import (
    PROFUSION,
    SYMBOLS,
    PleuralThickening,
    Reading,
    major_category,
    normal_reading,
)

R, L = frozenset({"R"}), frozenset({"L"})


def _positive(**changes: object) -> Reading:
    base = Reading(
        film_quality=1,
        profusion="1/1",
        primary_shape="q",
        secondary_shape="t",
        zones=frozenset({"RU", "LU", "RM"}),
        large_opacities="0",
    )
    return dataclasses.replace(base, **changes)


def _fields(reading: Reading) -> list[str | None]:
    return [p.field for p in reading.problems()]


def test_the_scales_are_the_ilo_ones() -> None:
    assert len(PROFUSION) == 12 and PROFUSION[0] == "0/-" and PROFUSION[-1] == "3/+"
    assert [major_category(p) for p in PROFUSION] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert len(SYMBOLS) == 29 and list(SYMBOLS)[:3] == ["aa", "at", "ax"] and list(SYMBOLS)[-1] == "od"


def test_valid_readings_pass() -> None:
    assert normal_reading().validate().problems() == []
    assert _positive().problems() == []
    assert _positive(profusion="0/1", primary_shape=None, secondary_shape=None, zones=frozenset()).problems() == []
    assert Reading(film_quality=4, film_quality_reason="under-exposed, rotated").problems() == []


def test_errors_are_pneumoview_errors_carrying_the_field() -> None:
    with pytest.raises(ReadingValidationError) as info:
        Reading(film_quality=1, profusion="0/0", primary_shape="p", secondary_shape="p").validate()
    assert isinstance(info.value, PneumoViewError)
    assert info.value.field == "primary_shape"
    assert "0/0" in info.value.reason and info.value.message == f"primary_shape: {info.value.reason}"


@pytest.mark.parametrize(
    ("reading", "field"),
    [
        (Reading(film_quality=5, profusion="0/0"), "film_quality"),
        (Reading(film_quality=2, profusion="0/0"), "film_quality_reason"),
        (Reading(film_quality=1), "profusion"),
        (Reading(film_quality=1, profusion="1/4"), "profusion"),
        (Reading(film_quality=1, profusion="0/0", zones=frozenset({"RU"})), "zones"),
        (_positive(zones=frozenset()), "zones"),  # shapes without zones
        (_positive(primary_shape=None, secondary_shape=None), "primary_shape"),
        (_positive(secondary_shape=None), "secondary_shape"),
        (_positive(primary_shape="x"), "primary_shape"),
        (_positive(zones=frozenset({"RU", "XX"})), "zones"),
        (_positive(large_opacities="D"), "large_opacities"),
        (_positive(symbols=frozenset({"zz"})), "symbols"),
        (dataclasses.replace(normal_reading(), symbols=frozenset({"ax"})), "symbols"),
        (
            dataclasses.replace(
                normal_reading(),
                profusion="0/1",
                primary_shape="p",
                secondary_shape="p",
                zones=frozenset({"RL"}),
                symbols=frozenset({"ax"}),
            ),
            "symbols",
        ),
        (dataclasses.replace(normal_reading(), symbols=frozenset({"od"})), "comments"),
        (Reading(film_quality=4, film_quality_reason="cut off", profusion="0/0"), "profusion"),
        (Reading(film_quality=4, film_quality_reason="cut off", symbols=frozenset({"tb"})), "symbols"),
    ],
)
def test_impossible_combinations_are_refused_with_the_field(reading: Reading, field: str) -> None:
    assert field in _fields(reading)
    with pytest.raises(ReadingValidationError):
        reading.validate()


def test_ax_is_accepted_with_small_opacities() -> None:
    assert _positive(symbols=frozenset({"ax", "em"})).problems() == []


def test_pleural_rules() -> None:
    plaque = PleuralThickening(
        sites={"in_profile": R, "diaphragm": L}, calcification={"diaphragm": L}, extent={"R": 2}, width={"R": "b"}
    )
    assert _positive(plaques=plaque).problems() == []
    # width needs a plaque in profile on that side (face-on plaques have no width)
    face_on = PleuralThickening(sites={"face_on": L}, extent={"L": 1}, width={"L": "a"})
    assert _fields(_positive(plaques=face_on)) == ["plaques.width"]
    # chest-wall plaque needs an extent; an extent needs a chest-wall plaque on that side
    assert _fields(_positive(plaques=PleuralThickening(sites={"in_profile": R}))) == ["plaques.extent"]
    assert _fields(_positive(plaques=PleuralThickening(sites={"diaphragm": R}, extent={"R": 1}))) == ["plaques.extent"]
    assert _fields(_positive(plaques=PleuralThickening(sites={"in_profile": R}, extent={"R": 4}))) == ["plaques.extent"]
    # calcification only where a plaque is recorded at that site and side
    lone = PleuralThickening(sites={"diaphragm": R}, calcification={"diaphragm": L})
    assert _fields(_positive(plaques=lone)) == ["plaques.calcification"]
    # diffuse thickening: chest wall only, and only with costophrenic angle obliteration on that side
    dpt = PleuralThickening(sites={"in_profile": L}, extent={"L": 1})
    assert _fields(_positive(diffuse_thickening=dpt)) == ["diffuse_thickening"]
    assert _positive(diffuse_thickening=dpt, costophrenic_obliteration=L).problems() == []
    assert _fields(_positive(diffuse_thickening=dpt, costophrenic_obliteration=R)) == ["diffuse_thickening"]
    dpt_diaphragm = PleuralThickening(sites={"diaphragm": L})
    assert "diffuse_thickening.sites" in _fields(
        _positive(diffuse_thickening=dpt_diaphragm, costophrenic_obliteration=L)
    )
    assert _fields(_positive(costophrenic_obliteration=frozenset({"X"}))) == ["costophrenic_obliteration"]


def test_derived_flags() -> None:
    assert not normal_reading().small_opacities and not normal_reading().pleural_abnormalities
    assert _positive().small_opacities and _positive().major_category == 1
    assert dataclasses.replace(normal_reading(), large_opacities="A").parenchymal_abnormalities
    assert _positive(costophrenic_obliteration=R).pleural_abnormalities
    assert not Reading(film_quality=4, film_quality_reason="x").classified


def test_json_round_trip_is_exact_and_strict() -> None:
    reading = _positive(
        film_quality=2,
        film_quality_reason="slightly over-exposed",
        large_opacities="B",
        plaques=PleuralThickening(
            sites={"in_profile": R | L, "face_on": L},
            calcification={"face_on": L},
            extent={"R": 1, "L": 3},
            width={"L": "c"},
        ),
        costophrenic_obliteration=R,
        diffuse_thickening=PleuralThickening(sites={"in_profile": R}, extent={"R": 2}, width={"R": "a"}),
        symbols=frozenset({"ax", "od", "em"}),
        comments="od: old rib resection, right",
    )
    text = json.dumps(reading.to_json_dict())
    again = Reading.from_json_dict(json.loads(text))
    assert again == reading
    assert again.to_json_dict()["symbols"] == ["ax", "em", "od"]  # the reading sheet's order
    with pytest.raises(ReadingValidationError, match="unknown key"):
        Reading.from_json_dict({**reading.to_json_dict(), "ai_probability": 0.9})
    with pytest.raises(ReadingValidationError) as info:
        Reading.from_json_dict({**reading.to_json_dict(), "film_quality": "1"})
    assert info.value.field == "film_quality"
    with pytest.raises(ReadingValidationError):  # validated on the way in
        Reading.from_json_dict({**normal_reading().to_json_dict(), "zones": ["RU"]})
