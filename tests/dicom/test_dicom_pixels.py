"""Pixel decoding: every transfer syntax of the real test files gives the same stored values."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pydicom.encaps
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import pixel_array

from pneumoview.dicom.pixels import MAX_FRAME_BYTES, check_jpeg_stream, decode_first_frame, jpeg_frame_header
from pneumoview.errors import DicomReadError, PixelDecodeError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_rg1_jpeg2000_decodes_to_exactly_the_uncompressed_pixels(rg1_uncompressed: Path, rg1_j2k: Path) -> None:
    plain = decode_first_frame(rg1_uncompressed)
    j2k = decode_first_frame(rg1_j2k)
    assert plain.pixels.dtype == np.uint16 and plain.pixels.shape == (1955, 1841)
    assert j2k.transfer_syntax == pydicom.uid.JPEG2000Lossless
    assert np.array_equal(j2k.pixels, plain.pixels)
    assert (int(plain.pixels.min()), int(plain.pixels.max())) == (874, 26479)  # stated in the data README


@pytest.mark.parametrize("plugin", ["pylibjpeg", "gdcm", "pillow"])
def test_each_jpeg2000_plugin_through_pydicom_agrees(rg1_uncompressed: Path, rg1_j2k: Path, plugin: str) -> None:
    """Pillow alone doubles these values; through pydicom (which corrects it) all agree."""
    reference = decode_first_frame(rg1_uncompressed).pixels
    assert np.array_equal(pixel_array(rg1_j2k, decoding_plugin=plugin), reference)


#: Same image in several transfer syntaxes (lossless): native LE/BE/implicit, RLE, JPEG-LS, JPEG 2000.
LOSSLESS_GROUPS = {
    "MR_small.dcm": [
        "MR_small_RLE.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_expb.dcm",
        "MR_small_implicit.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
    ],
    "emri_small.dcm": [
        "emri_small_RLE.dcm",
        "emri_small_big_endian.dcm",
        "emri_small_jpeg_2k_lossless.dcm",
        "emri_small_jpeg_ls_lossless.dcm",
    ],
    "SC_rgb.dcm": ["SC_rgb_rle.dcm", "SC_rgb_expb.dcm", "SC_rgb_jpeg_gdcm.dcm"],  # last: JPEG lossless SV1
    "693_UNCR.dcm": ["693_J2KR.dcm"],
    "MR2_UNCR.dcm": ["MR2_J2KR.dcm"],
    "US1_UNCR.dcm": ["US1_J2KR.dcm"],
    "OBXXXX1A.dcm": ["OBXXXX1A_rle.dcm", "OBXXXX1A_expb.dcm"],
}


@pytest.mark.parametrize(
    ("reference", "other"), [(ref, other) for ref, others in LOSSLESS_GROUPS.items() for other in others]
)
def test_lossless_transfer_syntaxes_give_identical_stored_values(reference: str, other: str) -> None:
    expected = decode_first_frame(get_testdata_file(reference))
    got = decode_first_frame(get_testdata_file(other))
    assert got.transfer_syntax != expected.transfer_syntax
    assert got.pixels.shape == expected.pixels.shape
    assert np.array_equal(got.pixels, expected.pixels)


@pytest.mark.parametrize("lossy", ["SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_jpeg_lossy_gdcm.dcm"])
def test_jpeg_baseline_is_close_to_the_uncompressed_original(lossy: str) -> None:
    original = decode_first_frame(get_testdata_file("SC_rgb.dcm")).pixels.astype(np.int16)
    decoded = decode_first_frame(get_testdata_file(lossy))
    assert decoded.transfer_syntax == pydicom.uid.JPEGBaseline8Bit
    assert decoded.photometric == "RGB"  # YBR_FULL in the file, converted by pydicom
    assert np.abs(decoded.pixels.astype(np.int16) - original).mean() < 4.0  # lossy: colour edges differ


def test_jpeg_lossless_process14_decodes() -> None:
    path = get_testdata_file("JPGLosslessP14SV1_1s_1f_8b.dcm")
    frame = decode_first_frame(path)
    assert frame.transfer_syntax == pydicom.uid.JPEGLosslessSV1
    assert np.array_equal(frame.pixels, pydicom.dcmread(path).pixel_array)


def test_multi_frame_decodes_the_first_frame_only() -> None:
    path = get_testdata_file("emri_small.dcm")
    frame = decode_first_frame(path)
    all_frames = pydicom.dcmread(path).pixel_array
    assert frame.number_of_frames == 10 == all_frames.shape[0]
    assert frame.pixels.shape == all_frames.shape[1:]
    assert np.array_equal(frame.pixels, all_frames[0])


def test_file_without_file_meta_decodes() -> None:
    frame = decode_first_frame(get_testdata_file("OT-PAL-8-face.dcm"))
    assert frame.photometric == "PALETTE COLOR" and frame.pixels.ndim == 2


def test_twelve_bit_jpeg_is_reported_unsupported() -> None:
    with pytest.raises(PixelDecodeError, match="unsupported: JPEG Extended"):
        decode_first_frame(get_testdata_file("JPGExtended.dcm"))


def test_truncated_pixel_data_is_a_decode_error(tmp_path: Path) -> None:
    raw = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(raw[:-1000])
    with pytest.raises(PixelDecodeError) as info:
        decode_first_frame(path)
    assert info.value.path == path


def test_absurd_matrix_size_is_refused_before_allocating(tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Rows = ds.Columns = 65535
    path = tmp_path / "huge.dcm"
    ds.save_as(path)
    assert 65535 * 65535 * 2 > MAX_FRAME_BYTES
    with pytest.raises(PixelDecodeError, match="too large"):
        decode_first_frame(path)


def test_non_dicom_is_a_read_error(tmp_path: Path) -> None:
    path = tmp_path / "x.dcm"
    path.write_text("hello\n" * 100)
    with pytest.raises(DicomReadError):
        decode_first_frame(path)


#: Header edits that made GDCM abort the whole process (found by fuzzing) before check_jpeg_stream.
GDCM_ABORTS = [
    ("SC_rgb_jpeg_gdcm.dcm", "BitsStored", 1),  # JPEG lossless, 8-bit precision
    ("JPGLosslessP14SV1_1s_1f_8b.dcm", "BitsAllocated", 32),
    ("MR_small_jpeg_ls_lossless.dcm", "Rows", 65),  # JPEG-LS, 64x64 stream
    ("MR_small_jpeg_ls_lossless.dcm", "Columns", 65535),
]


@pytest.mark.parametrize(("name", "keyword", "value"), GDCM_ABORTS)
def test_header_stream_mismatch_is_refused_before_gdcm(tmp_path: Path, name: str, keyword: str, value: int) -> None:
    """Run in a child process: if the guard regresses, the abort fails this test, not the suite."""
    ds = pydicom.dcmread(get_testdata_file(name))
    setattr(ds, keyword, value)
    path = tmp_path / "mismatch.dcm"
    ds.save_as(path)
    code = (
        "import sys, warnings, logging; warnings.simplefilter('ignore'); logging.disable(50)\n"
        "from pneumoview.dicom.pixels import decode_first_frame\n"
        "from pneumoview.errors import PixelDecodeError\n"
        "try:\n    decode_first_frame(sys.argv[1])\nexcept PixelDecodeError as exc:\n    print('refused:', exc.reason)\n"
    )
    child = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, f"decoder crashed the process (status {child.returncode})"
    assert child.stdout.startswith("refused:"), child.stdout


def test_jpeg_frame_header_of_real_streams() -> None:
    for name in ("SC_rgb_jpeg_gdcm.dcm", "MR_small_jpeg_ls_lossless.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm"):
        ds = pydicom.dcmread(get_testdata_file(name))
        stream = pydicom.encaps.get_frame(ds.PixelData, 0, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1))
        precision, rows, columns, components = jpeg_frame_header(stream)
        assert (rows, columns, components) == (ds.Rows, ds.Columns, ds.SamplesPerPixel)
        assert precision == ds.BitsStored
        check_jpeg_stream(ds)  # consistent: no error
    with pytest.raises(ValueError, match="SOI"):
        jpeg_frame_header(b"\x00\x01\x02\x03")
