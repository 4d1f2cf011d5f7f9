"""Image-quality gate: real radiographs (RG1, ../shared/data/cxr) and hand-made edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from data_support import shared_path

from pneumoview.dicom import quality as q
from pneumoview.dicom.lungs import LungBox, lung_mask
from pneumoview.dicom.scan import read_record
from pneumoview.imageio import load_grey
from pneumoview.preprocess import prepare_grey

INNER = LungBox(100, 100, 900, 900, fallback=False, confidence=0.9)
MID_GREY = np.full((224, 224), 0.5, np.float32)


def real(path):
    grey = load_grey(path)
    model_input = prepare_grey(grey)
    return model_input, grey.pixels.shape, lung_mask(grey.pixels)


def test_rg1_passes_with_its_header(rg1_uncompressed) -> None:
    model_input, shape, mask = real(rg1_uncompressed)
    header = q.HeaderFacts.from_record(read_record(rg1_uncompressed))
    assert (header.rows, header.columns, header.view_position) == (1955, 1841, "PA")
    report = q.assess(model_input.crop, model_input.box, shape, header=header, mask=mask)
    # RG1 states no Pixel Spacing (0028,0030) nor Imager Pixel Spacing (0018,1164): a caution only.
    assert report.codes == (q.SPACING_UNKNOWN,)
    assert not report.below_gate
    assert report.measures["clipped_bright"] < 0.01 and report.measures["lung_asymmetry"] < 0.2
    # The same image with a gate asking for a larger matrix falls below it.
    strict = q.thresholds_from({"min_matrix": 2048})
    assert q.MATRIX_SMALL in q.quality_codes(
        model_input.crop, model_input.box, shape, header=header, mask=mask, thresholds=strict
    )


def test_real_image_with_apices_cut_off() -> None:
    # ARDSSevere.png: the lung apices reach the top edge of the film.
    model_input, shape, mask = real(shared_path("cxr", "images", "ARDSSevere.png"))
    codes = q.quality_codes(model_input.crop, model_input.box, shape, mask=mask)
    assert q.LUNGS_CUT_OFF in codes
    # A well-framed film of the same set is not flagged.
    model_input, shape, mask = real(shared_path("cxr", "images", "16654_1_1.png"))
    assert q.quality_codes(model_input.crop, model_input.box, shape, mask=mask) == [q.SPACING_UNKNOWN]


def test_most_of_the_real_set_passes_exposure_and_rotation() -> None:
    folder = shared_path("cxr", "images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})[:12]
    flagged = []
    for path in files:
        model_input, shape, mask = real(path)
        codes = q.quality_codes(model_input.crop, model_input.box, shape, mask=mask)
        flagged += [c for c in codes if c in {q.EXPOSURE_BRIGHT, q.EXPOSURE_DARK, q.ROTATION, q.FALLBACK}]
    assert len(flagged) <= 2, flagged


@pytest.mark.parametrize(
    ("value", "code"),
    [(1.0, q.EXPOSURE_BRIGHT), (0.0, q.EXPOSURE_DARK), (0.99, q.EXPOSURE_BRIGHT), (0.5, None)],
)
def test_exposure_clipping(value, code) -> None:
    crop = MID_GREY.copy()
    crop[:112] = value  # half the crop
    codes, measures = q.exposure(crop, q.QualityThresholds())
    assert codes == ([code] if code else [])
    if code == q.EXPOSURE_BRIGHT:
        assert measures["clipped_bright"] == pytest.approx(0.5)


def test_resolution_and_projection_from_the_header() -> None:
    t = q.QualityThresholds()
    fine = q.HeaderFacts(rows=2048, columns=2500, pixel_spacing=(0.143, 0.143), view_position="PA")
    assert q.resolution(fine, t)[0] == [] and q.projection(fine) == []
    coarse = q.HeaderFacts(rows=512, columns=600, pixel_spacing=(0.5, 0.5), view_position="LL")
    assert q.resolution(coarse, t)[0] == [q.SPACING_COARSE, q.MATRIX_SMALL]
    assert q.projection(coarse) == [q.LATERAL]
    assert q.projection(q.HeaderFacts(view_position="AP")) == [q.AP_VIEW]
    report = q.assess(MID_GREY, INNER, (1000, 1000), header=q.HeaderFacts(2048, 2048, (0.15, 0.15), "AP"))
    assert report.codes == (q.AP_VIEW,) and not report.below_gate and report.cautions == (q.AP_VIEW,)


def test_box_touching_an_edge_and_fallback() -> None:
    t = q.QualityThresholds()
    assert q.lungs_cut_off(INNER, (1000, 1000), t) == []
    assert q.lungs_cut_off(LungBox(100, 0, 900, 900, False, 0.9), (1000, 1000), t) == [q.LUNGS_CUT_OFF]
    assert q.lungs_cut_off(LungBox(100, 100, 998, 900, False, 0.9), (1000, 1000), t) == [q.LUNGS_CUT_OFF]
    fallback = LungBox(0, 0, 1000, 1000, fallback=True, confidence=0.0, reason="no lungs")
    report = q.assess(MID_GREY, fallback, (1000, 1000), header=q.HeaderFacts(2048, 2048, (0.15, 0.15)))
    assert report.codes == (q.FALLBACK,) and report.below_gate


def lungs(left_width: int, right_width: int) -> np.ndarray:
    mask = np.zeros((200, 200), bool)
    mask[40:160, 100 - 10 - left_width : 90] = True
    mask[40:160, 110 : 110 + right_width] = True
    return mask


def test_rotation_from_the_lung_mask() -> None:
    t = q.QualityThresholds()
    codes, measures = q.rotation(lungs(60, 50), t)
    assert codes == [] and measures["lung_asymmetry"] == pytest.approx(10 / 110)
    codes, measures = q.rotation(lungs(80, 15), t)
    assert codes == [q.ROTATION] and measures["lung_asymmetry"] == pytest.approx(65 / 95)
    one = np.zeros((200, 200), bool)
    one[40:160, 20:90] = True
    assert q.rotation(one, t)[0] == [q.ONE_LUNG]


def test_thresholds_from_settings() -> None:
    assert q.thresholds_from(None) == q.QualityThresholds()
    assert q.thresholds_from({"max_pixel_spacing_mm": 0.3, "min_matrix": 1500.0}).min_matrix == 1500
    for bad in (
        {"nonsense": 1},
        {"clip_level": -0.1},
        {"max_clipped_dark": float("nan")},
        {"edge_tolerance": 2},
        {"min_matrix": 10.5},
    ):
        with pytest.raises(ValueError):
            q.thresholds_from(bad)


def test_gate_thresholds_are_settings(tmp_path) -> None:
    from pneumoview.errors import ConfigError
    from pneumoview.settings import load_settings, save_settings, settings_from_dict

    settings = settings_from_dict({"quality": {"max_pixel_spacing_mm": 0.25}, "monitor_band": 0.05})
    save_settings(settings, tmp_path / "s.json")
    again = load_settings(tmp_path / "s.json")
    assert q.thresholds_from(again.quality).max_pixel_spacing_mm == 0.25 and again.monitor_band == 0.05
    for bad in (
        {"quality": {"max_clipped_dark": 5}},
        {"quality": {"bogus": 1}},
        {"monitor_band": 2},
        {"monitor_baseline_weeks": 0},
    ):
        with pytest.raises(ConfigError):
            settings_from_dict(bad)


def test_the_gate_on_a_prepared_input_reads_the_header_and_the_small_mask(rg1_uncompressed, tmp_path) -> None:
    """:func:`quality.gate` (the one the analysis runs): the sandboxed model input's subsampled lung mask
    gives the codes the full-size mask gives; the header comes from the file itself."""
    from quality_support import quality_edits

    from pneumoview.preprocess import prepare

    files = quality_edits(tmp_path, rg1_uncompressed)
    for name in ("cut.dcm", "coarse.dcm"):
        model_input = prepare(files[name])
        assert model_input.mask is not None and max(model_input.mask.shape) <= 256
        header = q.header_facts(files[name])
        full = q.assess(
            model_input.crop,
            model_input.box,
            model_input.image_shape,
            header=header,
            mask=lung_mask(load_grey(files[name]).pixels),
        )
        assert q.gate(model_input, files[name]).codes == full.codes
    assert q.gate(prepare(files["cut.dcm"]), files["cut.dcm"]).codes == (q.SPACING_UNKNOWN, q.LUNGS_CUT_OFF)
    png = shared_path("cxr", "images", "ARDSSevere.png")
    assert q.header_facts(png) is None
    assert q.gate(prepare(png), png).codes == (q.SPACING_UNKNOWN, q.LUNGS_CUT_OFF)
