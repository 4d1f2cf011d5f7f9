"""Helpers of the PACS tests: loopback ports, tiny synthetic DICOM images, dciodvfy."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from pneumoview.pacs.uids import new_uid

LOOPBACK = "127.0.0.1"
DICOMWEB_PLUGIN_CANDIDATES = (
    Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so"),
    Path("/usr/lib/orthanc/libOrthancDicomWeb.so"),
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def small_image(
    *,
    patient_id: str = "PV-TEST",
    study_uid: str | None = None,
    sop_uid: str | None = None,
    size: int = 8,
    modality: str = "DX",
) -> Dataset:
    """A tiny valid DX-like image (MONOCHROME2, 16 bits) with fresh UIDs."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    ds.SOPInstanceUID = sop_uid or new_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid or new_uid()
    ds.SeriesInstanceUID = new_uid()
    ds.PatientID = patient_id
    ds.PatientName = "Test^Small"
    ds.StudyDate = "20240102"
    ds.Modality = modality
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = (np.arange(size * size, dtype=np.uint16) % 4096).tobytes()
    return ds


def dciodvfy_errors(path: Path) -> list[str]:
    """dciodvfy's 'Error' lines for ``path`` (skips the test where dicom3tools is not installed)."""
    binary = shutil.which("dciodvfy")
    if binary is None:
        pytest.skip("dciodvfy not installed (Debian package dicom3tools)")
    done = subprocess.run([binary, str(path)], check=False, capture_output=True, text=True, timeout=60)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]


def upload(orthanc, path: Path) -> str:
    """Store ``path`` into Orthanc with dcmtk's storescu (pynetdicom where dcmtk is absent); its Orthanc id."""
    storescu = shutil.which("storescu")
    if storescu is not None:
        subprocess.run(
            [storescu, "-aet", "MODALITY", "-aec", orthanc.aet, LOOPBACK, str(orthanc.dicom_port), str(path)],
            check=True,
            capture_output=True,
            timeout=60,
        )
    else:
        from pneumoview.pacs.scu import Client, parse_pacs

        report = Client(parse_pacs(orthanc.pacs), calling_aet="MODALITY").send_files([path])
        assert report.sent == [path]
    sop = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
    found = orthanc.rest("/tools/lookup", sop.encode(), method="POST")
    return next(item["ID"] for item in found if item["Type"] == "Instance")
