"""Lung-field localiser on real radiographs (../shared/data/cxr) and on edge cases."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumoview.dicom import lungs
from pneumoview.dicom.lungs import (
    DEFAULT_MARGIN,
    LungBox,
    LungNet,
    box_iou,
    crop_to_model,
    locate_lungs,
    lung_mask,
    mask_box,
)
from pneumoview.errors import WeightsError


def _load(directory: Path, name: str) -> np.ndarray:
    with Image.open(directory / name) as image:
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def _mask(directory: Path, name: str) -> np.ndarray:
    with Image.open(directory / name) as image:
        return np.asarray(image.convert("L")) > 127


@pytest.fixture(scope="module")
def cxr_rows(shared_data: Path) -> tuple[Path, list[dict[str, str]]]:
    directory = shared_data / "cxr"
    if not (directory / "labels.csv").is_file():
        pytest.skip("needs ../shared/data/cxr")
    with (directory / "labels.csv").open(newline="", encoding="utf-8") as handle:
        return directory, list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def chest(cxr_rows: tuple[Path, list[dict[str, str]]]) -> tuple[np.ndarray, np.ndarray]:
    """A real 2386x1835 PA radiograph (RGB JPEG) and its lung mask."""
    directory, rows = cxr_rows
    row = next(r for r in rows if r["file"].endswith("covid-19-pneumonia-12.jpg"))
    return _load(directory, row["file"]), _mask(directory, row["mask_file"])


@pytest.mark.shared
@pytest.mark.slow
def test_shipped_weights_meet_the_bar_on_the_shared_set(cxr_rows: tuple[Path, list[dict[str, str]]]) -> None:
    directory, rows = cxr_rows
    ious = []
    for row in rows:
        grey = _load(directory, row["file"])
        truth = mask_box(_mask(directory, row["mask_file"]))
        assert truth is not None
        box = locate_lungs(grey)
        assert not box.fallback, (row["file"], box.reason)
        ious.append(box_iou((box.x0, box.y0, box.x1, box.y1), truth))
    assert len(ious) == 60
    assert np.mean(ious) >= 0.85
    assert np.min(ious) >= 0.5


@pytest.mark.shared
def test_box_matches_mask_rectangle_on_a_real_radiograph(chest: tuple[np.ndarray, np.ndarray]) -> None:
    grey, truth_mask = chest
    truth = mask_box(truth_mask)
    box = locate_lungs(grey)
    assert not box.fallback and box.reason == ""
    assert 0.5 < box.confidence <= 1.0
    assert box_iou((box.x0, box.y0, box.x1, box.y1), truth) > 0.85
    # the box is strictly inside the image and much smaller than it (lungs, not the whole film)
    h, w = grey.shape
    assert 0 <= box.x0 < box.x1 <= w and 0 <= box.y0 < box.y1 <= h
    assert box.width * box.height < 0.8 * w * h


@pytest.mark.shared
def test_lung_mask_overlaps_the_reference_mask(chest: tuple[np.ndarray, np.ndarray]) -> None:
    grey, truth = chest
    mask = lung_mask(grey)
    assert mask.dtype == bool and mask.shape == grey.shape
    dice = 2 * np.logical_and(mask, truth).sum() / (mask.sum() + truth.sum())
    assert dice > 0.8
    # the mask rectangle is the margin-free LungBox (same post-processing), up to the 2x sub-pixel refinement
    box = locate_lungs(grey, margin=0.0)
    assert box_iou(mask_box(mask), (box.x0, box.y0, box.x1, box.y1)) > 0.95


@pytest.mark.shared
def test_flipped_and_thumbnail_inputs(chest: tuple[np.ndarray, np.ndarray]) -> None:
    grey, truth_mask = chest
    truth = mask_box(truth_mask)
    h, w = grey.shape
    # left-right flip: the box flips with the image
    flipped = locate_lungs(np.ascontiguousarray(grey[:, ::-1]))
    mirrored = (w - flipped.x1, flipped.y0, w - flipped.x0, flipped.y1)
    assert box_iou(mirrored, truth) > 0.8
    # a small thumbnail (as in case-report figures) gives the same relative box
    thumb = np.asarray(Image.fromarray(grey, mode="F").resize((330, 254), Image.Resampling.BILINEAR), np.float32)
    small = locate_lungs(thumb)
    scaled = (small.x0 * w / 330, small.y0 * h / 254, small.x1 * w / 330, small.y1 * h / 254)
    assert box_iou(tuple(int(round(v)) for v in scaled), truth) > 0.8


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((512, 400), np.float32),
        np.ones((300, 300), np.float32),
        np.random.default_rng(0).random((640, 480), dtype=np.float32),
    ],
    ids=["black", "white", "noise"],
)
def test_no_lungs_falls_back_to_the_whole_image(image: np.ndarray) -> None:
    box = locate_lungs(image)
    h, w = image.shape
    assert box.fallback is True
    assert (box.x0, box.y0, box.x1, box.y1) == (0, 0, w, h)
    assert box.confidence == 0.0 and box.reason
    assert not lung_mask(image).any()
    crop = crop_to_model(image, box)
    assert crop.shape == (224, 224)


@pytest.mark.shared
@pytest.mark.slow
def test_4k_input_works_and_is_fast(chest: tuple[np.ndarray, np.ndarray]) -> None:
    grey, truth_mask = chest
    big = np.asarray(Image.fromarray(grey, mode="F").resize((4096, 4096), Image.Resampling.BILINEAR), np.float32)
    locate_lungs(big)  # warm-up (weights, BLAS)
    t0 = time.perf_counter()
    box = locate_lungs(big)
    elapsed = time.perf_counter() - t0
    assert not box.fallback
    truth = mask_box(truth_mask)
    h, w = grey.shape
    scaled = tuple(int(round(v)) for v in (box.x0 * w / 4096, box.y0 * h / 4096, box.x1 * w / 4096, box.y1 * h / 4096))
    assert box_iou(scaled, truth) > 0.8
    assert elapsed < 1.0, f"locate_lungs on 4096x4096 took {elapsed * 1000:.0f} ms"
    crop = crop_to_model(big, box)
    assert crop.shape == (224, 224) and crop.dtype == np.float32


def test_crop_to_model_shape_dtype_range_and_content() -> None:
    rng = np.random.default_rng(1)
    grey = rng.random((600, 500), dtype=np.float32)
    grey[100:300, 50:250] = 1.0
    grey[300:500, 250:450] = 0.0
    box = LungBox(50, 100, 450, 500, fallback=False, confidence=0.9)
    crop = crop_to_model(grey, box)
    assert crop.shape == (224, 224) and crop.dtype == np.float32
    assert 0.0 <= crop.min() and crop.max() <= 1.0
    # the box's top-left quarter is white, its bottom-right quarter black
    assert crop[10:100, 10:100].min() > 0.99
    assert crop[124:214, 124:214].max() < 0.01
    assert crop_to_model(grey, box, size=96).shape == (96, 96)
    # overshoot values (e.g. bicubic upstream) are clipped into [0, 1]
    loud = np.full((50, 40), 1.5, np.float32)
    assert crop_to_model(loud, LungBox(0, 0, 40, 50, True, 0.0)).max() == 1.0


def test_crop_rejects_a_box_outside_the_image() -> None:
    with pytest.raises(ValueError):
        crop_to_model(np.zeros((10, 10), np.float32), LungBox(20, 20, 30, 30, False, 1.0))


@pytest.mark.shared
def test_margin_widens_the_box_and_is_clipped(chest: tuple[np.ndarray, np.ndarray]) -> None:
    grey, _ = chest
    h, w = grey.shape
    tight = locate_lungs(grey, margin=0.0)
    wide = locate_lungs(grey, margin=0.05)
    assert DEFAULT_MARGIN == locate_lungs.__kwdefaults__["margin"]
    assert wide.x0 <= tight.x0 and wide.y0 <= tight.y0 and wide.x1 >= tight.x1 and wide.y1 >= tight.y1
    for lo_t, hi_t, lo_w, hi_w, limit in (
        (tight.x0, tight.x1, wide.x0, wide.x1, w),
        (tight.y0, tight.y1, wide.y0, wide.y1, h),
    ):
        side = hi_t - lo_t
        expected_lo, expected_hi = max(0, lo_t - 0.05 * side), min(limit, hi_t + 0.05 * side)
        assert abs(lo_w - expected_lo) <= 2 and abs(hi_w - expected_hi) <= 2
    huge = locate_lungs(grey, margin=2.0)
    assert (huge.x0, huge.y0, huge.x1, huge.y1) == (0, 0, w, h) and not huge.fallback
    with pytest.raises(ValueError):
        locate_lungs(grey, margin=-0.1)


def test_box_iou_and_mask_box() -> None:
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (10, 10, 20, 20)) == 0.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    mask = np.zeros((20, 30), bool)
    assert mask_box(mask) is None
    mask[3:7, 10:25] = True
    assert mask_box(mask) == (10, 3, 25, 7)
    assert LungBox(10, 3, 25, 7, False, 1.0).iou(LungBox(10, 3, 25, 7, False, 1.0)) == 1.0


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError):
        locate_lungs(np.zeros((64, 64), np.float32), margin=-0.1)
    with pytest.raises(ValueError):
        lung_mask(np.zeros((10, 10, 3), np.float32))


@pytest.mark.parametrize("shape", [(1, 500), (500, 1), (1, 1), (3, 7), (15, 900), (10, 10, 3), (0, 5)])
def test_degenerate_shapes_give_the_whole_image_fallback_never_an_error(shape: tuple[int, ...]) -> None:
    """Regression: a 1-pixel-high image raised ValueError and killed `analyze --include-pictures` and `train`."""
    grey = np.full(shape, 0.5, np.float32)
    box = locate_lungs(grey)
    assert box.fallback and box.reason
    if grey.ndim == 2 and grey.size:
        assert (box.x0, box.y0, box.x1, box.y1) == (0, 0, shape[1], shape[0])
        crop = crop_to_model(grey, box, 224)
        assert crop.shape == (224, 224) and np.allclose(crop, 0.5)


def test_non_finite_pixels_give_the_fallback() -> None:
    grey = np.full((64, 64), 0.5, np.float32)
    grey[3, 3] = np.nan
    box = locate_lungs(grey)
    assert box.fallback and "non-finite" in box.reason


def test_corrupt_or_incomplete_weights_raise_weights_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(WeightsError):
        LungNet.from_npz(bad)
    incomplete = tmp_path / "incomplete.npz"
    np.savez(incomplete, config=np.frombuffer(b'{"input_size": 96, "channels": [8, 16]}', dtype=np.uint8))
    with pytest.raises(WeightsError, match="lack"):
        LungNet.from_npz(incomplete)


def test_packaged_weights_are_small_and_load() -> None:
    net = lungs.load_network()
    assert net.input_size % 2 ** (len(net.channels) - 1) == 0
    size = Path(lungs.__file__).with_name("lung_model").joinpath(lungs.WEIGHTS_FILE).stat().st_size
    assert size < 2 * 1024 * 1024
    prob = net.probability(np.zeros((300, 200), np.float32))
    assert prob.shape == (net.input_size, net.input_size) and prob.dtype == np.float32


def test_localiser_does_not_import_torch() -> None:
    code = (
        "import sys, numpy as np; import pneumoview.dicom.lungs as l; l.locate_lungs(np.zeros((64, 64), np.float32)); "
    )
    code += "bad = [m for m in ('torch', 'PySide6', 'training') if m in sys.modules]; assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
