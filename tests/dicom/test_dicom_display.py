"""Display pipeline: each pure step checked against pydicom's reference implementation on real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut, apply_voi_lut, apply_windowing

from pneumoview.dicom.display import (
    LUT_FUNCTION,
    Window,
    apply_window,
    auto_window,
    colour_to_grey,
    invert_unit,
    load_display_image,
    modality_lut,
    render,
    should_invert,
    unit_image,
    unit_to_uint8,
    windows_from_header,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore:overflow encountered in exp:RuntimeWarning")


def _windowed_copy(tmp_path: Path, function: str | None, centers: list[float], widths: list[float]) -> Path:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.WindowCenter = centers
    ds.WindowWidth = widths
    ds.WindowCenterWidthExplanation = [f"preset {i}" for i in range(len(centers))]
    if function is not None:
        ds.VOILUTFunction = function
    path = tmp_path / f"ct_{function}.dcm"
    ds.save_as(path)
    return path


def test_modality_rescale_matches_pydicom() -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    assert float(ds.RescaleIntercept) != 0.0
    ours = modality_lut(ds.pixel_array, ds)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, apply_modality_lut(ds.pixel_array, ds), rtol=0, atol=1e-3)


def test_modality_lut_sequence_matches_pydicom() -> None:
    ds = pydicom.dcmread(get_testdata_file("mlut_18.dcm"))
    assert "ModalityLUTSequence" in ds
    ours = modality_lut(ds.pixel_array, ds)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, apply_modality_lut(ds.pixel_array, ds).astype(np.float32))


@pytest.mark.parametrize("function", [None, "LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_windowing_matches_pydicom_for_each_voi_function(tmp_path: Path, function: str | None) -> None:
    path = _windowed_copy(tmp_path, function, [40.0, 300.0], [400.0, 1500.0])
    ds = pydicom.dcmread(path)
    image = load_display_image(path)
    assert [(w.center, w.width) for w in image.windows] == [(40.0, 400.0), (300.0, 1500.0)]
    assert [w.name for w in image.windows] == ["preset 0", "preset 1"]
    assert {w.function for w in image.windows} == {function or "LINEAR"}
    for index, window in enumerate(image.windows):
        reference = apply_windowing(apply_modality_lut(ds.pixel_array, ds), ds, index=index)
        # pydicom maps onto an output range of its own (from the stored range and rescale);
        # find it by windowing extreme values, then compare on [0, 1].
        y_min, y_max = apply_windowing(np.array([-1e12, 1e12]), ds, index=index)
        expected = (reference - y_min) / (y_max - y_min)
        ours = apply_window(image.values, window)
        assert ours.dtype == np.float32 and 0.0 <= ours.min() and ours.max() <= 1.0
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-4)
        assert expected.max() - expected.min() > 0.5  # the image spans the window


def test_rg1_window_and_inversion(rg1_uncompressed: Path) -> None:
    ds = pydicom.dcmread(rg1_uncompressed)
    image = load_display_image(rg1_uncompressed)
    assert image.photometric == "MONOCHROME1" and image.invert
    assert image.default_window == image.windows[0]
    assert (image.default_window.center, image.default_window.width) == (15000.0, 30000.0)
    reference = apply_voi_lut(ds.pixel_array, ds) / (2**15 - 1)
    unit = unit_image(image, invert=False)
    np.testing.assert_allclose(unit, reference, atol=1e-4)
    shown = render(image)
    assert shown.dtype == np.uint8 and shown.shape == (1955, 1841)
    np.testing.assert_array_equal(shown, unit_to_uint8(1.0 - reference.astype(np.float32)))
    # Displayed as a radiograph should look: mediastinum/spine (centre) brighter than the lungs.
    h, w = shown.shape
    band = slice(h // 4, 3 * h // 4)
    centre = shown[band, int(w * 0.45) : int(w * 0.55)].mean()
    lungs = (shown[band, int(w * 0.2) : int(w * 0.3)].mean() + shown[band, int(w * 0.7) : int(w * 0.8)].mean()) / 2
    assert centre > lungs + 20


def test_rg1_jpeg2000_renders_identically(rg1_uncompressed: Path, rg1_j2k: Path) -> None:
    np.testing.assert_array_equal(render(load_display_image(rg1_j2k)), render(load_display_image(rg1_uncompressed)))


def test_voi_lut_sequence_matches_pydicom() -> None:
    path = get_testdata_file("vlut_04.dcm")
    ds = pydicom.dcmread(path)
    image = load_display_image(path)
    (window,) = image.windows
    assert window.function == LUT_FUNCTION and window.lut_index == 0 and image.default_window == window
    bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
    reference = apply_voi_lut(ds.pixel_array, ds).astype(np.float32) / (2**bits - 1)
    np.testing.assert_allclose(unit_image(image, invert=False), reference, atol=1e-6)


def test_presentation_lut_shape_inverse_inverts_monochrome2(tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PresentationLUTShape = "INVERSE"
    path = tmp_path / "inverse.dcm"
    ds.save_as(path)
    inverse = load_display_image(path)
    plain = load_display_image(get_testdata_file("CT_small.dcm"))
    assert inverse.invert and not plain.invert
    np.testing.assert_allclose(unit_image(inverse), 1.0 - unit_image(plain), atol=1e-6)


@pytest.mark.parametrize(
    ("photometric", "shape", "expected"),
    [
        ("MONOCHROME1", None, True),
        ("MONOCHROME1", "INVERSE", True),
        ("MONOCHROME2", "IDENTITY", False),
        ("MONOCHROME2", "INVERSE", True),
        ("MONOCHROME2", None, False),
    ],
)
def test_should_invert_never_inverts_twice(photometric: str, shape: str | None, expected: bool) -> None:
    assert should_invert(photometric, shape) is expected


def test_automatic_window_when_the_file_has_none() -> None:
    path = get_testdata_file("CT_small.dcm")
    image = load_display_image(path)
    assert image.windows == [] and image.default_window.name == "automatic"
    assert any("automatic window" in note for note in image.notes)
    shown = render(image)
    # 0.5-99.5 percentiles: about 0.5 % of pixels at each end, not a blank image
    assert 0.001 < (shown == 0).mean() < 0.02 and 0.001 < (shown == 255).mean() < 0.02
    assert len(np.unique(shown)) > 100


def test_auto_window_of_a_flat_image_is_valid() -> None:
    window = auto_window(np.full((50, 60), 7.0, dtype=np.float32))
    assert window.width >= 1.0
    assert np.isfinite(apply_window(np.full((5, 5), 7.0, dtype=np.float32), window)).all()


def test_invalid_window_values_are_dropped(tmp_path: Path) -> None:
    path = _windowed_copy(tmp_path, "LINEAR", [40.0, 50.0], [0.0, 400.0])
    image = load_display_image(path)
    assert [(w.center, w.width) for w in image.windows] == [(50.0, 400.0)]


def test_linear_window_edges_follow_the_standard() -> None:
    # PS3.3 C.11.2.1.2.1: x <= c - 0.5 - (w-1)/2 -> 0; x > c - 0.5 + (w-1)/2 -> max
    window = Window(center=100.0, width=11.0)
    x = np.array([94.5, 95.0, 99.5, 104.5, 105.0], dtype=np.float32)
    np.testing.assert_allclose(apply_window(x, window), [0.0, 0.05, 0.5, 1.0, 1.0], atol=1e-6)
    exact = Window(center=100.0, width=10.0, function="LINEAR_EXACT")
    np.testing.assert_allclose(apply_window(x, exact), [0.0, 0.0, 0.45, 0.95, 1.0], atol=1e-6)


def test_multi_frame_and_colour_notes() -> None:
    multi = load_display_image(get_testdata_file("emri_small.dcm"))
    assert "multi-frame: first of 10 frames shown" in multi.notes
    rgb = load_display_image(get_testdata_file("SC_rgb.dcm"))
    assert rgb.values.ndim == 2 and any("converted to grey" in n for n in rgb.notes)
    ybr = load_display_image(get_testdata_file("SC_ybr_full_uncompressed.dcm"))
    np.testing.assert_allclose(ybr.values, rgb.values, atol=2.0)  # same picture, YBR -> RGB -> grey
    palette = load_display_image(get_testdata_file("OBXXXX1A.dcm"))
    assert palette.values.ndim == 2 and any("palette" in n for n in palette.notes)
    assert render(palette).dtype == np.uint8


def test_colour_to_grey_uses_luma_weights() -> None:
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]], dtype=np.uint8)
    np.testing.assert_allclose(colour_to_grey(rgb), [[76.245, 149.685, 29.07, 255.0]], atol=1e-3)


def test_windows_from_header_of_a_siemens_mr() -> None:
    ds = pydicom.dcmread(get_testdata_file("MR-SIEMENS-DICOM-WithOverlays.dcm"), stop_before_pixels=True)
    windows = windows_from_header(ds)
    assert [(w.center, w.width, w.name) for w in windows] == [
        (float(c), float(w), str(n))
        for c, w, n in zip(ds.WindowCenter, ds.WindowWidth, ds.WindowCenterWidthExplanation)
    ]


def test_invert_and_uint8_are_pure() -> None:
    unit = np.array([0.0, 0.25, 1.0], dtype=np.float32)
    inverted = invert_unit(unit)
    assert inverted is not unit and unit[1] == np.float32(0.25)
    np.testing.assert_allclose(inverted, [1.0, 0.75, 0.0])
    np.testing.assert_array_equal(unit_to_uint8(unit), np.array([0, 64, 255], dtype=np.uint8))


def test_auto_window_fits_data_whose_range_is_below_one() -> None:
    rng = np.random.default_rng(1)
    values = (rng.random((300, 200)) * 0.01).astype(np.float32)  # e.g. a tiny rescale slope
    window = auto_window(values)
    unit = apply_window(values, window)
    assert window.function == "LINEAR_EXACT" and 0.0 < window.width < 0.01
    assert unit.min() == 0.0 and unit.max() == 1.0 and 0.4 < float(np.median(unit)) < 0.6
