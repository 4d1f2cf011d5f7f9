"""PACS test fixtures: a real Orthanc on loopback, small synthetic DICOM images, dciodvfy.

Orthanc (Debian packages ``orthanc`` + ``orthanc-dicomweb``) is started once per session with a
generated configuration: free ports, a temporary storage folder, HTTP reachable from loopback only,
the DICOMweb plugin from the Debian package. It is stopped at the end. Tests that need it are
skipped with the reason where the binary or the plugin is missing.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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


def small_image(*, patient_id: str = "PV-TEST", study_uid: str | None = None, sop_uid: str | None = None,
                size: int = 8, modality: str = "DX") -> Dataset:
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


@dataclass
class Orthanc:
    http: str  # http://127.0.0.1:PORT
    dicom_port: int
    aet: str
    storage: Path

    @property
    def pacs(self) -> str:
        return f"{LOOPBACK}:{self.dicom_port}:{self.aet}"

    @property
    def dicomweb(self) -> str:
        return f"{self.http}/dicom-web"

    def rest(self, path: str, body: bytes | dict | list | None = None, method: str | None = None) -> object:
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        request = urllib.request.Request(self.http + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
        try:
            return json.loads(raw)
        except ValueError:
            return raw


def _orthanc_binary() -> str:
    binary = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
    if binary is None:
        pytest.skip("Orthanc not installed (Debian package orthanc; .ci/run installs it as root)")
    return binary


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    binary = _orthanc_binary()
    plugin = next((p for p in DICOMWEB_PLUGIN_CANDIDATES if p.exists()), None)
    if plugin is None:
        pytest.skip("Orthanc's DICOMweb plugin not installed (Debian package orthanc-dicomweb)")
    root = tmp_path_factory.mktemp("orthanc")
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "PneumoViewTest", "StorageDirectory": str(root / "db"), "IndexDirectory": str(root / "db"),
        "HttpPort": http_port, "DicomPort": dicom_port, "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "HttpServerEnabled": True,
        "DicomServerEnabled": True, "DicomCheckCalledAet": False, "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True, "DicomAlwaysAllowFind": True, "DicomAlwaysAllowGet": True,
        "DicomAlwaysAllowMove": True, "UnknownSopClassAccepted": True, "StorageCompression": False,
        "Plugins": [str(plugin)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "DicomModalities": {}, "DicomScuTimeout": 10, "ConcurrentJobs": 2, "HttpThreadsCount": 8,
    }
    (root / "orthanc.json").write_text(json.dumps(config))
    log = (root / "orthanc.log").open("w")
    process = subprocess.Popen([binary, str(root / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    server = Orthanc(http=f"http://{LOOPBACK}:{http_port}", dicom_port=dicom_port, aet="ORTHANC", storage=root)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"Orthanc exited with {process.returncode}: {(root / 'orthanc.log').read_text()[-2000:]}")
            try:
                server.rest("/system")
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("Orthanc did not answer within 30 s")
                time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
