"""Operating points are bound to one bundle fingerprint, kept with their history, written atomically."""

from __future__ import annotations

import json

import pytest

from pneumoview.errors import CalibrationError, ConfigError
from pneumoview.operating_points import (
    CALIBRATED,
    CONFIRMED_DEFAULT,
    OperatingPoint,
    OperatingPointStore,
)

FP_A = "a" * 64
FP_B = "b" * 64


def point(fingerprint: str = FP_A, threshold: float = 0.42) -> OperatingPoint:
    return OperatingPoint.new(
        bundle_fingerprint=fingerprint,
        bundle_id="model-a",
        threshold=threshold,
        created_by="reader",
        data_summary={"n": 10},
        figures={"sensitivity": 0.9},
    )


def test_no_point_means_the_app_must_ask(tmp_path) -> None:
    store = OperatingPointStore(tmp_path / "op.json")
    answer = store.threshold_for(FP_A)
    assert answer.needs_choice and answer.threshold is None
    assert store.threshold_for("").needs_choice


def test_a_point_never_serves_another_bundle(tmp_path) -> None:
    store = OperatingPointStore(tmp_path / "op.json")
    saved = store.save(point(FP_A, 0.42))
    assert store.threshold_for(FP_A).threshold == 0.42
    assert store.threshold_for(FP_A).point == saved
    assert store.threshold_for(FP_B).needs_choice  # another bundle (e.g. a new version of the model)


def test_history_and_switching_back(tmp_path) -> None:
    store = OperatingPointStore(tmp_path / "op.json")
    first = store.save(point(FP_A, 0.42))
    second = store.save(point(FP_A, 0.61))
    store.save(point(FP_B, 0.3))
    assert store.threshold_for(FP_A).threshold == 0.61
    assert [p.id for p in store.points(FP_A)] == [first.id, second.id]
    store.set_current(FP_A, first.id)
    assert OperatingPointStore(tmp_path / "op.json").threshold_for(FP_A).threshold == 0.42
    with pytest.raises(CalibrationError):
        store.set_current(FP_B, first.id)  # a point of bundle A cannot become bundle B's
    with pytest.raises(CalibrationError):
        store.save(first)


def test_confirmed_default_is_marked(tmp_path) -> None:
    store = OperatingPointStore(tmp_path / "op.json")
    confirmed = store.confirm_default(bundle_fingerprint=FP_A, bundle_id="model-a", threshold=0.5, created_by="r")
    assert confirmed.kind == CONFIRMED_DEFAULT and confirmed.figures == {}
    assert store.threshold_for(FP_A).point.kind == CONFIRMED_DEFAULT
    assert point().kind == CALIBRATED


@pytest.mark.parametrize("threshold", [0.0, 1.0, float("nan"), float("inf"), 1.0000001])
def test_bad_thresholds_are_refused(threshold) -> None:
    with pytest.raises(CalibrationError):
        point(threshold=threshold)


def test_a_tampered_file_is_an_error_not_a_default(tmp_path) -> None:
    path = tmp_path / "op.json"
    store = OperatingPointStore(path)
    store.save(point(FP_A, 0.42))
    data = json.loads(path.read_text())
    data["points"][0]["threshold"] = 7
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="threshold"):
        store.threshold_for(FP_A)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        store.points()


def test_default_location_is_the_data_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PNEUMOVIEW_HOME", str(tmp_path))
    OperatingPointStore().save(point())
    assert (tmp_path / "data" / "operating_points.json").is_file()
    assert not list((tmp_path / "data").glob(".*.tmp"))  # atomic write left no temporary file
