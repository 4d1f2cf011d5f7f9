"""preprocess.prepare: file -> grey -> lung box -> 224x224 crop, exactly what the model sees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pneumoview.dicom.lungs import crop_to_model, locate_lungs
from pneumoview.errors import UnsupportedImageError
from pneumoview.imageio import GreyImage, load_grey
from pneumoview.preprocess import MODEL_SIZE, ModelInput, prepare, prepare_grey

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _check(model_input: ModelInput, size: int = MODEL_SIZE) -> None:
    crop = model_input.crop
    assert crop.dtype == np.float32 and crop.shape == (size, size)
    assert 0.0 <= float(crop.min()) and float(crop.max()) <= 1.0
    h, w = model_input.image_shape
    box = model_input.box
    assert 0 <= box.x0 < box.x1 <= w and 0 <= box.y0 < box.y1 <= h


def test_rg1_is_the_composition_of_its_steps(rg1_uncompressed: Path) -> None:
    model_input = prepare(rg1_uncompressed)
    _check(model_input)
    grey = load_grey(rg1_uncompressed).pixels
    box = locate_lungs(grey)
    assert model_input.box == box and model_input.image_shape == grey.shape
    np.testing.assert_array_equal(model_input.crop, crop_to_model(grey, box, MODEL_SIZE))
    assert model_input.source == rg1_uncompressed
    assert any("MONOCHROME1" in note for note in model_input.notes)


def test_rg1_lungs_are_found_not_the_whole_image(rg1_uncompressed: Path) -> None:
    model_input = prepare(rg1_uncompressed)
    box = model_input.box
    h, w = model_input.image_shape
    assert not box.fallback
    assert (box.x1 - box.x0) * (box.y1 - box.y0) < 0.95 * h * w


def test_jpeg2000_gives_the_same_crop(rg1_uncompressed: Path, rg1_j2k: Path) -> None:
    np.testing.assert_array_equal(prepare(rg1_j2k).crop, prepare(rg1_uncompressed).crop)


def test_png_radiograph(shared_data: Path) -> None:
    path = shared_data / "cxr" / "images" / "16654_1_1.png"
    model_input = prepare(path)
    _check(model_input)
    assert model_input.source == path


def test_size_and_margin_are_passed_through(rg1_uncompressed: Path) -> None:
    grey = load_grey(rg1_uncompressed)
    tight = prepare_grey(grey, margin=0.0)
    wide = prepare_grey(grey, margin=0.1)
    small = prepare_grey(grey, size=112)
    _check(small, 112)
    if not tight.box.fallback:
        assert wide.box.x0 <= tight.box.x0 and wide.box.y0 <= tight.box.y0
        assert wide.box.x1 >= tight.box.x1 and wide.box.y1 >= tight.box.y1
        assert (wide.box.x1 - wide.box.x0) > (tight.box.x1 - tight.box.x0)


def test_blank_image_falls_back_to_the_whole_image_and_says_so(tmp_path: Path) -> None:
    blank = GreyImage(pixels=np.full((600, 500), 0.5, dtype=np.float32), source=tmp_path / "blank.png")
    model_input = prepare_grey(blank)
    _check(model_input)
    assert model_input.box.fallback
    assert (model_input.box.x0, model_input.box.y0, model_input.box.x1, model_input.box.y1) == (0, 0, 500, 600)
    assert any("lungs not found" in note for note in model_input.notes)


def test_errors_come_from_loading(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    path.write_text("not an image")
    with pytest.raises(UnsupportedImageError):
        prepare(path)
