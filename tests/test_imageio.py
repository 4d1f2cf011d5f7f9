"""imageio.load_grey: one entry for DICOM and PNG/JPEG, float32 [0, 1], 1.0 = white."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from pneumoview.dicom.display import load_display_image, unit_image
from pneumoview.errors import DicomReadError, PixelDecodeError, UnsupportedImageError
from pneumoview.imageio import is_dicom_file, load_grey

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_dicom_goes_through_the_display_pipeline(rg1_uncompressed: Path) -> None:
    grey = load_grey(rg1_uncompressed)
    assert grey.is_dicom and grey.source == rg1_uncompressed
    assert grey.pixels.dtype == np.float32 and grey.pixels.shape == (1955, 1841)
    assert 0.0 <= grey.pixels.min() and grey.pixels.max() <= 1.0
    np.testing.assert_array_equal(grey.pixels, unit_image(load_display_image(rg1_uncompressed)))
    assert any("MONOCHROME1" in note for note in grey.notes)


def test_a_monochrome1_note_never_calls_the_correct_display_inverted(rg1_uncompressed: Path) -> None:
    """RG1 is MONOCHROME1 (0028,0004): shown correctly (bone white) by the pipeline; Invert stays the user's."""
    notes = load_grey(rg1_uncompressed).notes
    assert any(n.startswith("MONOCHROME1 (0028,0004)") and "bone is white" in n for n in notes)
    assert not any("inverted" in n for n in notes)


def test_jpeg2000_and_uncompressed_dicom_load_identically(rg1_uncompressed: Path, rg1_j2k: Path) -> None:
    np.testing.assert_array_equal(load_grey(rg1_j2k).pixels, load_grey(rg1_uncompressed).pixels)


def test_dicom_without_preamble_is_recognised(tmp_path: Path) -> None:
    raw = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    path = tmp_path / "ct_no_preamble.dcm"
    path.write_bytes(raw[132:])
    assert not is_dicom_file(path)
    grey = load_grey(path)
    assert grey.is_dicom and grey.pixels.shape == (128, 128)


def test_real_rgba_png_radiograph(shared_data: Path) -> None:
    path = shared_data / "cxr" / "images" / "16654_1_1.png"
    grey = load_grey(path)
    with Image.open(path) as picture:
        rgba = np.asarray(picture.convert("RGBA"))
        assert (rgba[..., 3] == 255).all()  # opaque: compositing must not change anything
        expected = np.asarray(picture.convert("RGB").convert("L"), dtype=np.float32) / 255.0
    assert not grey.is_dicom and grey.pixels.dtype == np.float32
    np.testing.assert_allclose(grey.pixels, expected, atol=1e-6)


def test_sixteen_bit_png_keeps_its_depth(tmp_path: Path, rg1_uncompressed: Path) -> None:
    values = (load_grey(rg1_uncompressed).pixels[::2, ::2] * 65535).round().astype(np.uint16)
    path = tmp_path / "rg1_16.png"
    Image.fromarray(values).save(path)
    grey = load_grey(path)
    np.testing.assert_allclose(grey.pixels, values.astype(np.float32) / 65535.0, atol=1e-7)
    assert len(np.unique(grey.pixels[::8, ::8])) > 256  # not squeezed to 8 bits


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    array = np.zeros((40, 100), dtype=np.uint8)
    array[:, :10] = 255  # bright stripe on the left
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(array).save(path, exif=exif, quality=95)
    grey = load_grey(path)
    assert grey.pixels.shape == (100, 40)
    assert grey.pixels[:10].mean() > 0.9 and grey.pixels[-10:].mean() < 0.1  # stripe now on top


def test_grey_jpeg_values(tmp_path: Path) -> None:
    ramp = np.tile(np.arange(256, dtype=np.uint8), (16, 1))
    path = tmp_path / "ramp.png"
    Image.fromarray(ramp).save(path)
    grey = load_grey(path)
    np.testing.assert_allclose(grey.pixels, ramp / 255.0, atol=1e-7)
    assert grey.notes == []


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(UnsupportedImageError) as info:
        load_grey(path)
    assert info.value.code == "unsupported-file" and info.value.path == path


def test_junk_with_a_dicom_suffix(tmp_path: Path) -> None:
    path = tmp_path / "junk.dcm"
    path.write_bytes(b"\x01\x02" * 500)
    with pytest.raises(UnsupportedImageError):
        load_grey(path)


def test_truncated_png_is_a_decode_error(tmp_path: Path) -> None:
    source = tmp_path / "ok.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300), dtype=np.uint8)).save(source)
    cut = tmp_path / "cut.png"
    cut.write_bytes(source.read_bytes()[:2000])
    with pytest.raises(PixelDecodeError):
        load_grey(cut)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DicomReadError, match="no such file"):
        load_grey(tmp_path / "gone.png")


def test_multi_frame_dicom_note(tmp_path: Path) -> None:
    path = tmp_path / "mf.dcm"
    shutil.copyfile(get_testdata_file("emri_small.dcm"), path)
    grey = load_grey(path)
    assert "multi-frame: first of 10 frames shown" in grey.notes


def test_viewable_picture_is_marked_no_dicom_header(shared_data: Path) -> None:
    from pneumoview.dicom.pictures import NO_DICOM_HEADER
    from pneumoview.imageio import PICTURE_SCALE, load_viewable

    path = sorted((shared_data / "cxr" / "images").glob("*.png"))[0]
    display = load_viewable(path)
    grey = load_grey(path)
    assert display.values.shape == grey.pixels.shape and display.values.dtype == np.float32
    np.testing.assert_allclose(display.values, grey.pixels * PICTURE_SCALE, rtol=1e-6)
    assert display.notes[0] == NO_DICOM_HEADER and not display.invert and display.photometric == ""
    assert display.windows == [] and display.default_window.width == PICTURE_SCALE


def test_viewable_dicom_is_the_display_pipeline(rg1_uncompressed: Path) -> None:
    from pneumoview.imageio import load_viewable

    display = load_viewable(rg1_uncompressed)
    np.testing.assert_array_equal(display.values, load_display_image(rg1_uncompressed).values)
    assert display.photometric == "MONOCHROME1"


def test_viewable_broken_pictures_raise_per_file_errors(tmp_path: Path, shared_data: Path) -> None:
    from pneumoview.imageio import load_viewable

    good = sorted((shared_data / "cxr" / "images").glob("*.png"))[0].read_bytes()
    (tmp_path / "truncated.png").write_bytes(good[: len(good) // 3])
    (tmp_path / "text.png").write_text("not a picture\n", encoding="utf-8")
    with pytest.raises(PixelDecodeError):
        load_viewable(tmp_path / "truncated.png")
    with pytest.raises(UnsupportedImageError):
        load_viewable(tmp_path / "text.png")
