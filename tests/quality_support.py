"""Copies of the real RG1 radiograph with one header or pixel edit each, made with pydicom, for the
image-quality gate's tests (``pneumoview.dicom.quality``)."""

from __future__ import annotations

from pathlib import Path

import pydicom

#: file name -> what was changed (the gate's expected codes are in the tests).
EDITS = ("rg1.dcm", "coarse.dcm", "ap.dcm", "lateral.dcm", "cut.dcm")
CUT_ROWS = 450  # rows removed from the top of cut.dcm: the lung apices then touch the top edge


def quality_edits(folder: Path, rg1: Path) -> dict[str, Path]:
    """RG1 as is, with Pixel Spacing (0028,0030) 1.5 mm, View Position (0018,5101) AP and LL, and with
    its top rows cut away; each with its own SOP Instance UID (0008,0018)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, name in enumerate(EDITS):
        ds = pydicom.dcmread(rg1)
        ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.{i + 1}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if name == "coarse.dcm":
            ds.PixelSpacing = [1.5, 1.5]
        elif name == "ap.dcm":
            ds.ViewPosition = "AP"
        elif name == "lateral.dcm":
            ds.ViewPosition = "LL"
        elif name == "cut.dcm":
            pixels = ds.pixel_array[CUT_ROWS:]
            ds.Rows = int(pixels.shape[0])
            ds.PixelData = pixels.tobytes()
        ds.save_as(folder / name)
        out[name] = folder / name
    return out
