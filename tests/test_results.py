"""The one result type: identity of real files, labels, fail-safe outputs, strict JSON, review status."""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path

import pytest

from pneumoview.results import (
    ANALYSED,
    FAILED,
    NOT_ANALYSED,
    REASON_NON_FINITE,
    REVIEW_CURRENT,
    REVIEW_NEEDED,
    ImageIdentity,
    ImageResult,
    Provenance,
    analysed,
    display_path,
    failed,
    identify,
    review_status,
)

CLASSES = ("pneumoconiosis", "normal")


def _prov(**kw: object) -> Provenance:
    base: dict = dict(
        bundle_id="m1",
        bundle_name="tiny",
        bundle_fingerprint="a" * 64,
        base_fingerprints={"clip": "c" * 64, "llama": "d" * 64},
        operating_point_id="op-1",
        threshold=0.5,
        software_version="0.1.0",
        preprocessing={"image_size": 224, "margin": None, "mean": [0.5, 0.5, 0.5], "std": [0.2] * 3},
        crop_box=(10, 20, 300, 400),
        crop_fallback=False,
        device="cpu",
        plan="cpu fp32",
    )
    base.update(kw)
    return Provenance(**base)


def _identity(path: str = "/data/a.dcm", uid: str = "1.2.3") -> ImageIdentity:
    return ImageIdentity(uid, "0" * 64, path)


def test_identity_of_real_files_uid_plus_content(tmp_path: Path, rg1_uncompressed: Path) -> None:
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(rg1_uncompressed.read_bytes()[:100_000])
    uid = "1.3.6.1.4.1.5962.1.1.9.1.1.20040826185059.5457"
    good, cut = identify(rg1_uncompressed, uid), identify(truncated, uid)
    assert good.sop_instance_uid == cut.sop_instance_uid == uid
    assert good.content_sha256 != cut.content_sha256 and good.key != cut.key  # one UID, two images
    copy = tmp_path / "copy.dcm"
    copy.write_bytes(rg1_uncompressed.read_bytes())
    assert identify(copy, uid).key == good.key  # byte-identical: the same image
    with pytest.raises(ValueError, match="64 lowercase hex"):
        ImageIdentity(uid, "XYZ", "a.dcm")


def test_label_at_the_threshold_and_the_demo_mark_in_one_place() -> None:
    low = analysed(_identity(), 0.3, class_names=CLASSES, demo=True, provenance=_prov(threshold=0.3))
    assert low.status == ANALYSED and low.label == "pneumoconiosis" and low.positive  # p >= threshold
    high = analysed(_identity(), 0.3, class_names=CLASSES, demo=False, provenance=_prov(threshold=0.31))
    assert high.label == "normal" and not high.positive
    assert low.shown_label == "DEMO - not a diagnosis: pneumoconiosis" and high.shown_label == "normal"
    with pytest.raises(ValueError, match="is not the label"):
        replace(high, label="pneumoconiosis")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1.5, -0.1])
def test_a_non_finite_output_is_a_failure_never_a_label(value: float) -> None:
    result = analysed(_identity(), value, class_names=CLASSES, demo=False, provenance=_prov())
    assert result.status == FAILED and result.reason_code == REASON_NON_FINITE
    assert result.label == "" and result.probability is None and not result.positive
    with pytest.raises(ValueError):
        ImageResult(
            image=_identity(),
            status=ANALYSED,
            class_names=CLASSES,
            probability=value,
            label="normal",
            provenance=_prov(),
        )


def test_json_round_trip_keeps_everything_including_a_non_utf8_file_name() -> None:
    name = os.fsdecode(b"/data/scan\xff.dcm")  # a file name byte that is not UTF-8
    result = analysed(
        _identity(name),
        0.8312346,
        class_names=CLASSES,
        demo=True,
        provenance=_prov(),
        analysed_at="2026-12-01T21:00:00.000001Z",
        notes=("lungs not found",),
    ).with_id(7)
    text = result.to_json()
    text.encode("ascii")  # one ASCII line: safe on any pipe
    back = ImageResult.from_json(text)
    assert back == result and back.image.path == name and back.provenance.crop_box == (10, 20, 300, 400)
    none = failed(_identity(), "lateral-view", "lateral views are not analysed", status=NOT_ANALYSED)
    assert ImageResult.from_json(none.to_json()) == none


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(extra=1),
        lambda d: d.pop("label"),
        lambda d: d.update(version=99),
        lambda d: d.update(probability="0.5"),
        lambda d: d.update(demo=1),
        lambda d: d["provenance"].update(threshold=True),
        lambda d: d["provenance"].update(crop_box=[1, 2, 3]),
        lambda d: d["image"].update(colour="red"),
        lambda d: d.update(label="normal"),  # not the label of 0.8 at 0.5
        lambda d: d.update(below_quality_gate="yes"),
        lambda d: d.update(quality_codes="lungs-cut-off"),
        lambda d: d.update(quality_codes=[1]),
        lambda d: d.update(quality_codes=["lungs-cut-off"], below_quality_gate=None),  # codes without a verdict
        lambda d: d.update(version=1),  # version 1 had no quality fields
    ],
)
def test_from_json_is_strict(change) -> None:
    data = analysed(_identity(), 0.8, class_names=CLASSES, demo=False, provenance=_prov()).to_dict()
    change(data)
    with pytest.raises(ValueError):
        ImageResult.from_json(json.dumps(data))


def test_from_json_refuses_nan() -> None:
    text = analysed(_identity(), 0.8, class_names=CLASSES, demo=False, provenance=_prov()).to_json()
    assert '"probability": 0.8' in text
    with pytest.raises(ValueError, match="non-finite"):
        ImageResult.from_json(text.replace('"probability": 0.8', '"probability": NaN'))


def test_review_status_after_a_model_change_and_a_threshold_flip() -> None:
    first = analysed(_identity(), 0.6, class_names=CLASSES, demo=False, provenance=_prov()).with_id(1)
    same = analysed(_identity(), 0.6, class_names=CLASSES, demo=False, provenance=_prov()).with_id(2)
    other_model = analysed(
        _identity(), 0.6, class_names=CLASSES, demo=False, provenance=_prov(bundle_fingerprint="b" * 64)
    ).with_id(3)
    flipped = analysed(_identity(), 0.6, class_names=CLASSES, demo=False, provenance=_prov(threshold=0.7)).with_id(4)
    assert review_status(False, None, first) == ""
    assert review_status(True, first, first) == REVIEW_CURRENT
    assert review_status(True, first, same) == REVIEW_CURRENT  # same model, same label
    assert review_status(True, first, other_model) == REVIEW_NEEDED  # another model: even with the same label
    assert review_status(True, first, flipped) == REVIEW_NEEDED  # the threshold flipped the label
    assert review_status(True, None, first) == REVIEW_NEEDED  # decided before any result


def test_display_path_is_valid_text() -> None:
    assert display_path(os.fsdecode(b"/a/b\xff.dcm")) == "/a/b\\xff.dcm"
    assert display_path("/a/Zoë.dcm") == "/a/Zoë.dcm"


def test_the_quality_gate_verdict_travels_in_the_json_and_marks_without_dropping() -> None:
    below = analysed(
        _identity(),
        0.8,
        class_names=CLASSES,
        demo=False,
        provenance=_prov(),
        quality_codes=("pixel-spacing-coarse", "lungs-cut-off"),
        below_quality_gate=True,
    )
    assert below.is_analysed and below.label == "pneumoconiosis"  # analysed and labelled all the same
    back = ImageResult.from_json(below.to_json())
    assert back == below and back.quality_codes == ("pixel-spacing-coarse", "lungs-cut-off")
    assert back.below_quality_gate is True and back.quality_text == "pixel-spacing-coarse;lungs-cut-off"
    nan = analysed(
        _identity(),
        math.nan,
        class_names=CLASSES,
        demo=False,
        provenance=_prov(),
        quality_codes=("ap-view",),
        below_quality_gate=False,
    )
    assert nan.status == FAILED and nan.quality_codes == ("ap-view",)  # the verdict is kept on a failure too
    with pytest.raises(ValueError, match="without a quality-gate verdict"):
        replace(below, below_quality_gate=None)


def test_a_result_stored_before_the_gate_reads_as_not_graded() -> None:
    data = analysed(_identity(), 0.2, class_names=CLASSES, demo=False, provenance=_prov()).to_dict()
    del data["quality_codes"], data["below_quality_gate"]
    data["version"] = 1
    old = ImageResult.from_json(json.dumps(data))
    assert old.below_quality_gate is None and old.quality_codes == () and old.quality_text == ""
    assert old.probability == 0.2
