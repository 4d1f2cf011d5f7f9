"""DICOM files are only ever opened read-only: checked with a Python audit hook on every open()."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from pneumoview.dicom.display import load_display_image, render
from pneumoview.dicom.scan import scan
from pneumoview.imageio import load_grey

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
_opens: list[tuple[str, str, int]] | None = None


def _audit(event: str, args: tuple[object, ...]) -> None:
    if event == "open" and _opens is not None and isinstance(args[0], (str, bytes, os.PathLike)):
        path, mode, flags = args
        _opens.append((os.fsdecode(path), str(mode), int(flags or 0)))  # type: ignore[arg-type]


sys.addaudithook(_audit)  # hooks cannot be removed; it records only while _opens is a list


def test_scan_decode_and_display_open_files_read_only(tmp_path: Path) -> None:
    global _opens
    names = ["CT_small.dcm", "MR_small_RLE.dcm", "SC_rgb_jpeg_gdcm.dcm", "JPEG2000.dcm", "OBXXXX1A.dcm"]
    for name in names:
        shutil.copyfile(get_testdata_file(name), tmp_path / name)
    (tmp_path / "junk.dcm").write_bytes(b"junk" * 100)
    _opens = []
    try:
        result = scan([tmp_path])
        for record in result.images:
            render(load_display_image(record.path))
            load_grey(record.path)
    finally:
        seen, _opens = _opens, None
    assert len(result.images) == len(names)
    mine = [(path, mode, flags) for path, mode, flags in seen if Path(path).parent == tmp_path]
    assert {Path(p).name for p, _, _ in mine} >= set(names) | {"junk.dcm"}
    for path, mode, flags in mine:
        assert "w" not in mode and "a" not in mode and "+" not in mode, (path, mode)
        assert not flags & _WRITE_FLAGS, (path, oct(flags))
    assert sorted(os.listdir(tmp_path)) == sorted([*names, "junk.dcm"])  # nothing written beside them
