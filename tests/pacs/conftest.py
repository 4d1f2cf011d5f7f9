"""PACS test fixtures: a real Orthanc on loopback, small synthetic DICOM images, dciodvfy.

Orthanc (Debian packages ``orthanc`` + ``orthanc-dicomweb``) is started once per session with a
generated configuration: free ports, a temporary storage folder, HTTP reachable from loopback only,
the DICOMweb plugin from the Debian package. It is stopped at the end. Tests that need it are
skipped with the reason where the binary or the plugin is missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pacs_support import DICOMWEB_PLUGIN_CANDIDATES, LOOPBACK, free_port


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
        "Name": "PneumoViewTest",
        "StorageDirectory": str(root / "db"),
        "IndexDirectory": str(root / "db"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "HttpServerEnabled": True,
        "DicomServerEnabled": True,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowGet": True,
        "DicomAlwaysAllowMove": True,
        "UnknownSopClassAccepted": True,
        "StorageCompression": False,
        "Plugins": [str(plugin)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "DicomModalities": {},
        "DicomScuTimeout": 10,
        "ConcurrentJobs": 2,
        "HttpThreadsCount": 8,
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
