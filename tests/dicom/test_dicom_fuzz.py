"""Fuzz: a few hundred mutated real DICOM files through scan + decode + display.

Mutations (seeded, reproducible): truncation, flipped bytes, corrupted element lengths,
deleted tags, absurd values, overwritten pixel data. Every outcome must be success or a
:class:`PneumoViewError` subclass: any other exception type is a bug in PneumoView.
"""

from __future__ import annotations

import json
import random
import struct
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from pneumoview.dicom.display import load_display_image, render
from pneumoview.dicom.scan import read_record, scan
from pneumoview.errors import PneumoViewError
from pneumoview.imageio import load_grey

pytestmark = pytest.mark.filterwarnings("ignore")

SEED = 20261127
CASES = 360
#: Small real files covering the codecs: native LE/BE/implicit, RLE, JPEG baseline/lossless,
#: JPEG-LS, JPEG 2000, palette, multi-frame, VOI LUT, Modality LUT.
SOURCES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_implicit.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_jp2klossless.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "SC_rgb_jpeg_gdcm.dcm",
    "JPGLosslessP14SV1_1s_1f_8b.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
    "OBXXXX1A.dcm",
    "vlut_04.dcm",
    "mlut_18.dcm",
    "SC_rgb_rle_2frame.dcm",
    "US1_J2KR.dcm",
]
#: Tags whose loss or corruption matters most to decoding and display.
KEY_TAGS = [
    "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel",
    "PhotometricInterpretation", "PlanarConfiguration", "NumberOfFrames", "PixelData", "WindowCenter",
    "WindowWidth", "RescaleSlope", "RescaleIntercept", "VOILUTSequence", "ModalityLUTSequence",
    "RedPaletteColorLookupTableData", "RedPaletteColorLookupTableDescriptor", "SOPClassUID", "StudyInstanceUID",
]
ODD_VALUES: dict[str, list[object]] = {
    "Rows": [0, 1, 3, 65535],
    "Columns": [0, 1, 7, 65535],
    "BitsAllocated": [0, 1, 7, 12, 32, 64],
    "BitsStored": [0, 1, 17, 33],
    "HighBit": [0, 40],
    "PixelRepresentation": [1, 2],
    "SamplesPerPixel": [0, 2, 3, 4],
    "PhotometricInterpretation": ["", "RGB", "YBR_FULL_422", "PALETTE COLOR", "MONOCHROME1", "HSV", "NONSENSE"],
    "NumberOfFrames": [0, -1, 2, 100000],
    "WindowCenter": ["abc", "1e400", "-0"],
    "WindowWidth": ["0", "-5", "nan", "1e-30"],
    "RescaleSlope": ["0", "nan", "1e38", "x"],
    "VOILUTFunction": ["SIGMOID", "BOGUS", ""],
    "PresentationLUTShape": ["INVERSE", "??"],
}


def _truncate(raw: bytes, rng: random.Random, path: Path) -> str:
    cut = rng.randrange(0, len(raw))
    path.write_bytes(raw[:cut])
    return f"truncate at {cut}"


def _flip(raw: bytes, rng: random.Random, path: Path) -> str:
    data = bytearray(raw)
    count = rng.randint(1, 24)
    header_end = min(len(data), 4096)
    for _ in range(count):
        pos = rng.randrange(header_end) if rng.random() < 0.7 else rng.randrange(len(data))
        data[pos] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))
    return f"flip {count} bits"


def _wrong_length(raw: bytes, rng: random.Random, path: Path) -> str:
    ds = pydicom.dcmread(path_of(raw, path), stop_before_pixels=False, force=True)
    tags = [elem.tag for elem in ds.iterall()] + [elem.tag for elem in ds.file_meta]
    data = bytearray(raw)
    little = not bytes(raw[:200]).count(b"\x00\x08\x00")  # rough: big endian tags look like 00 08 00 ..
    done = []
    for tag in rng.sample(tags, k=min(len(tags), rng.randint(1, 3))):
        pattern = struct.pack("<HH", tag.group, tag.element) if little else struct.pack(">HH", tag.group, tag.element)
        pos = bytes(data).find(pattern)
        if pos < 0:
            continue
        value = rng.choice([0, 1, 3, 0xFFFF, 0xFFFFFFFF, rng.randrange(1 << 32), len(raw) * 4])
        if rng.random() < 0.5 and pos + 8 <= len(data):
            data[pos + 6 : pos + 8] = struct.pack("<H", value & 0xFFFF)  # explicit VR, short length
        elif pos + 8 <= len(data):
            data[pos + 4 : pos + 8] = struct.pack("<I", value & 0xFFFFFFFF)  # implicit VR / long length
        done.append(f"{tag}={value}")
    path.write_bytes(bytes(data))
    return f"wrong length {done}"


def path_of(raw: bytes, path: Path) -> Path:
    path.write_bytes(raw)
    return path


def _delete_tags(raw: bytes, rng: random.Random, path: Path) -> str:
    ds = pydicom.dcmread(path_of(raw, path), force=True)
    present = [k for k in KEY_TAGS if k in ds]
    gone = rng.sample(present, k=min(len(present), rng.randint(1, 3)))
    for keyword in gone:
        delattr(ds, keyword)
    if rng.random() < 0.15 and "TransferSyntaxUID" in ds.file_meta:
        del ds.file_meta.TransferSyntaxUID
        gone.append("TransferSyntaxUID")
    ds.save_as(path, enforce_file_format=False)
    return f"delete {gone}"


def _odd_value(raw: bytes, rng: random.Random, path: Path) -> str:
    ds = pydicom.dcmread(path_of(raw, path), force=True)
    changed = []
    for keyword in rng.sample(sorted(ODD_VALUES), k=rng.randint(1, 3)):
        value = rng.choice(ODD_VALUES[keyword])
        try:
            setattr(ds, keyword, value)
        except (ValueError, TypeError, OverflowError):
            continue
        changed.append(f"{keyword}={value!r}")
    ds.save_as(path, enforce_file_format=False)
    return f"odd values {changed}"


def _overwrite_pixels(raw: bytes, rng: random.Random, path: Path) -> str:
    data = bytearray(raw)
    start = rng.randrange(len(data) // 2, len(data))
    length = rng.randint(1, max(1, len(data) - start))
    fill = bytes(rng.getrandbits(8) for _ in range(min(length, 64))) * (length // 64 + 1)
    data[start : start + length] = fill[:length]
    path.write_bytes(bytes(data))
    return f"overwrite {length} bytes at {start}"


MUTATIONS: list[Callable[[bytes, random.Random, Path], str]] = [
    _truncate,
    _flip,
    _wrong_length,
    _delete_tags,
    _odd_value,
    _overwrite_pixels,
]


def _exercise(path: Path) -> bool:
    """Everything a user's file goes through; only PneumoViewError may escape (caught here).

    Returns True when the file decoded and rendered.
    """
    try:
        read_record(path)
    except PneumoViewError:
        pass  # a per-file error: exactly what is wanted
    try:
        image = load_display_image(path)
        shown = render(image)
        assert shown.dtype == np.uint8 and shown.shape == image.values.shape
        rendered = True
    except PneumoViewError:
        rendered = False
    try:
        grey = load_grey(path)
        assert grey.pixels.dtype == np.float32
    except PneumoViewError:
        pass
    return rendered


def run_fuzz(folder: Path, seed: int = SEED, cases: int = CASES, progress: Path | None = None) -> dict[str, object]:
    """Mutate, exercise, and collect every exception that is not a PneumoViewError."""
    import logging

    logging.disable(logging.CRITICAL)  # pydicom logs each failing decoder plugin
    warnings.simplefilter("ignore")
    rng = random.Random(seed)
    sources = {name: Path(get_testdata_file(name)).read_bytes() for name in SOURCES}
    crashes: list[str] = []
    made = rendered = 0
    for case in range(cases):
        name = rng.choice(SOURCES)
        mutation = rng.choice(MUTATIONS)
        path = folder / f"case{case:04d}.dcm"
        try:
            what = mutation(sources[name], rng, path)
        except Exception:  # noqa: BLE001 - a mutation pydicom cannot write is simply skipped
            continue
        made += 1
        if progress is not None:  # so that a hard crash (a codec aborting) names its case
            progress.write_text(f"case {case}: {name} / {what}\n")
        try:
            rendered += _exercise(path)
        except AssertionError as exc:
            crashes.append(f"{name} / {what}: wrong output: {exc}")
        except Exception as exc:  # noqa: BLE001 - collecting every crash is the point of the test
            crashes.append(f"{name} / {what}: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-3)}")
        except BaseException as exc:  # e.g. a Rust PanicException from a codec
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            crashes.append(f"{name} / {what}: {type(exc).__name__}: {exc}")
    return {"made": made, "rendered": rendered, "crashes": crashes}


def test_mutated_dicoms_never_raise_anything_but_pneumoview_errors(tmp_path: Path) -> None:
    """Runs in a child process: a codec that aborts the process fails this test, not the suite."""
    progress = tmp_path / "progress.txt"
    child = subprocess.run(
        [sys.executable, __file__, str(tmp_path), str(progress)], capture_output=True, text=True, timeout=300
    )
    last = progress.read_text() if progress.exists() else "before the first case"
    assert child.returncode == 0, f"fuzz child died (status {child.returncode}) at {last}{child.stderr[-2000:]}"
    outcome = json.loads(child.stdout.strip().splitlines()[-1])
    assert outcome["made"] >= 300, f"only {outcome['made']} mutations could be written"
    crashes = outcome["crashes"]
    assert not crashes, f"{len(crashes)} unhandled exception(s):\n" + "\n".join(crashes[:10])
    # the mutations break files, but not all of them
    assert 20 < outcome["rendered"] < outcome["made"] - 50


def test_mutated_rg1_truncations(rg1_uncompressed: Path, rg1_j2k: Path, tmp_path: Path) -> None:
    """The real chest radiograph, cut at random places in both transfer syntaxes: per-file errors only."""
    rng = random.Random(SEED + 1)
    for source in (rg1_uncompressed, rg1_j2k):
        raw = source.read_bytes()
        for i in range(4):
            path = tmp_path / f"{source.stem}_{i}.dcm"
            cut = rng.randrange(0, len(raw)) if i else 2000  # 2000: inside the header
            path.write_bytes(raw[:cut])
            _exercise(path)
    result = scan([tmp_path])
    assert len(result.images) + len(result.problems) == 8


if __name__ == "__main__":  # the child process of the fuzz test: python test_dicom_fuzz.py FOLDER PROGRESS
    print(json.dumps(run_fuzz(Path(sys.argv[1]), progress=Path(sys.argv[2]))))
