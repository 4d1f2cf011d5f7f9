"""End to end against a real Orthanc (loopback): store, find, retrieve, analyse (demo), send SR + SC back,
read them back; Orthanc and storescu sending to PneumoView's listener; the DICOMweb path.

Orthanc is the session fixture of conftest.py; everything here talks to 127.0.0.1 only.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pydicom
import pytest
from pacs_support import LOOPBACK, free_port, small_image, upload

from pneumoview.cli import main
from pneumoview.labels import DEMO_MARK
from pneumoview.pacs.scp import Inbox, ListenerConfig, StorageListener
from pneumoview.pacs.scu import Client, parse_pacs
from pneumoview.pacs.sr import read_sr


@pytest.fixture(scope="module")
def rg1_in_orthanc(orthanc, rg1_uncompressed: Path) -> pydicom.Dataset:
    upload(orthanc, rg1_uncompressed)
    return pydicom.dcmread(rg1_uncompressed, stop_before_pixels=True)


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_store_find_get_analyse_send_back_and_read_back(
    orthanc, rg1_in_orthanc, rg1_uncompressed, tmp_path, capsys
) -> None:
    source = rg1_in_orthanc
    code, out, _ = _cli(
        capsys,
        "pacs",
        "find",
        "--pacs",
        orthanc.pacs,
        "--patient-id",
        source.PatientID,
        "--modality",
        "CR,DX",
        "--json",
    )
    assert code == 0
    found = [json.loads(line) for line in out.splitlines()]
    assert [f["study_uid"] for f in found] == [source.StudyInstanceUID]
    assert found[0]["patient_id"] == source.PatientID and found[0]["study_date"] == source.StudyDate

    inbox = tmp_path / "inbox"
    code, _, err = _cli(
        capsys, "pacs", "get", "--pacs", orthanc.pacs, "--study", source.StudyInstanceUID, "--into", str(inbox)
    )
    assert code == 0, err
    retrieved = inbox / source.StudyInstanceUID / f"{source.SOPInstanceUID}.dcm"
    assert sorted(p for p in inbox.rglob("*") if p.is_file()) == [retrieved]
    assert pydicom.dcmread(retrieved).PixelData == pydicom.dcmread(rg1_uncompressed).PixelData

    report, results = tmp_path / "report.csv", tmp_path / "results"
    code, _, err = _cli(
        capsys, "analyze", str(inbox), "--demo", "--csv", str(report), "--dicom-out", str(results), "--quiet"
    )
    assert code == 0, err
    (row,) = list(csv.DictReader(io.StringIO(report.read_text(encoding="utf-8-sig"))))
    assert row["status"] == "analysed"
    written = sorted(results.iterdir())
    assert [p.name[:3] for p in written] == ["SC-", "SR-"]

    code, _, err = _cli(capsys, "pacs", "send", str(results), "--pacs", orthanc.pacs)
    assert code == 0, err
    series = orthanc.rest(f"/studies/{_study_id(orthanc, source.StudyInstanceUID)}/series")
    modalities = sorted(s["MainDicomTags"].get("Modality", "") for s in series)
    assert modalities == ["CR", "OT", "SR"]  # the source, the Secondary Capture, the SR, in the source's study

    sr_path = next(p for p in written if p.name.startswith("SR-"))
    sr_uid = pydicom.dcmread(sr_path).SOPInstanceUID
    (sr_id,) = [i["ID"] for i in orthanc.rest("/tools/lookup", sr_uid.encode(), method="POST")]
    back = pydicom.dcmread(io.BytesIO(orthanc.rest(f"/instances/{sr_id}/file")))
    values = read_sr(back)
    assert values["probability"] == pytest.approx(float(row["probability"]), abs=1e-6)
    assert values["threshold"] == pytest.approx(float(row["threshold"]))
    assert values["finding"] == ("Present" if float(row["probability"]) >= float(row["threshold"]) else "Absent")
    assert values["demo"] is True and DEMO_MARK in back.SeriesDescription
    assert values["source_uids"] == [source.SOPInstanceUID]
    assert back.PatientID == source.PatientID and back.StudyInstanceUID == source.StudyInstanceUID


def _study_id(orthanc, study_uid: str) -> str:
    return next(
        i["ID"] for i in orthanc.rest("/tools/lookup", study_uid.encode(), method="POST") if i["Type"] == "Study"
    )


def _wait_for(predicate, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_orthanc_and_storescu_send_to_the_listener(orthanc, tmp_path: Path) -> None:
    image = small_image(patient_id=f"PV-{uuid.uuid4().hex[:8]}")
    path = tmp_path / "small.dcm"
    image.save_as(path, enforce_file_format=True)
    orthanc_id = upload(orthanc, path)

    listener = StorageListener(ListenerConfig(inbox=tmp_path / "inbox", port=0, quiet_seconds=0.5))
    listener.start()
    try:
        name = f"pv{uuid.uuid4().hex[:6]}"
        orthanc.rest(f"/modalities/{name}", {"AET": "PNEUMOVIEW", "Host": LOOPBACK, "Port": listener.port}, "PUT")
        orthanc.rest(f"/modalities/{name}/store", {"Resources": [orthanc_id], "Synchronous": True}, "POST")
        target = listener.inbox.root / image.StudyInstanceUID / f"{image.SOPInstanceUID}.dcm"
        assert _wait_for(target.exists)
        assert pydicom.dcmread(target).PatientID == image.PatientID

        storescu = shutil.which("storescu")
        if storescu is not None:  # and a modality sending with dcmtk
            other = small_image()
            other_path = tmp_path / "other.dcm"
            other.save_as(other_path, enforce_file_format=True)
            subprocess.run(
                [storescu, "-aet", "MODALITY", "-aec", "PNEUMOVIEW", LOOPBACK, str(listener.port), str(other_path)],
                check=True,
                capture_output=True,
                timeout=60,
            )
            assert (listener.inbox.root / other.StudyInstanceUID / f"{other.SOPInstanceUID}.dcm").exists()
    finally:
        listener.stop()


def test_c_move_to_our_own_listener(orthanc, tmp_path: Path, capsys) -> None:
    image = small_image()
    path = tmp_path / "small.dcm"
    image.save_as(path, enforce_file_format=True)
    upload(orthanc, path)
    port = free_port()
    orthanc.rest("/modalities/pvmove", {"AET": "PVMOVE", "Host": LOOPBACK, "Port": port}, "PUT")
    code, _, err = _cli(
        capsys,
        "pacs",
        "get",
        "--pacs",
        orthanc.pacs,
        "--aet",
        "PVMOVE",
        "--study",
        image.StudyInstanceUID,
        "--into",
        str(tmp_path / "inbox"),
        "--move-port",
        str(port),
    )
    assert code == 0, err
    assert (tmp_path / "inbox" / image.StudyInstanceUID / f"{image.SOPInstanceUID}.dcm").exists()


def test_dicomweb_find_get_and_stow(orthanc, tmp_path: Path, capsys) -> None:
    image = small_image(patient_id=f"PVWEB-{uuid.uuid4().hex[:6]}")
    path = tmp_path / "small.dcm"
    image.save_as(path, enforce_file_format=True)
    code, _, err = _cli(capsys, "pacs", "send", str(path), "--dicomweb", orthanc.dicomweb)  # STOW-RS
    assert code == 0, err
    code, out, _ = _cli(
        capsys, "pacs", "find", "--dicomweb", orthanc.dicomweb, "--patient-id", image.PatientID, "--json"
    )
    assert code == 0
    (match,) = [json.loads(line) for line in out.splitlines()]
    assert match["study_uid"] == image.StudyInstanceUID and match["patient_id"] == image.PatientID
    code, _, err = _cli(
        capsys,
        "pacs",
        "get",
        "--dicomweb",
        orthanc.dicomweb,
        "--study",
        image.StudyInstanceUID,
        "--into",
        str(tmp_path / "inbox"),
    )
    assert code == 0, err
    got = tmp_path / "inbox" / image.StudyInstanceUID / f"{image.SOPInstanceUID}.dcm"
    assert pydicom.dcmread(got).PixelData == image.PixelData


def test_unreachable_pacs_is_one_line_exit_2(capsys) -> None:
    code, _, err = _cli(capsys, "pacs", "find", "--pacs", f"{LOOPBACK}:{free_port()}:NOBODY", "--timeout", "3")
    assert code == 2
    assert err.strip().count("\n") == 0 and "association with" in err


def test_bad_pacs_address_is_refused(capsys) -> None:
    for bad in ("nohost", "host:port:AET", "host:99999:AET", "host:104:" + "A" * 17):
        code, _, err = _cli(capsys, "pacs", "find", "--pacs", bad)
        assert code == 2 and ("PACS" in err or "AE title" in err), bad


def test_retrieve_writes_only_inside_the_inbox(orthanc, tmp_path: Path) -> None:
    image = small_image()
    path = tmp_path / "small.dcm"
    image.save_as(path, enforce_file_format=True)
    upload(orthanc, path)
    inbox = Inbox(tmp_path / "box" / "inbox")
    report = Client(parse_pacs(orthanc.pacs)).get_study(image.StudyInstanceUID, inbox)
    assert report.failed == [] and len(report.written) == 1
    files = [p for p in (tmp_path / "box").rglob("*") if p.is_file()]
    assert files == report.written and files[0].is_relative_to(inbox.root)


def test_send_reports_unreadable_files_and_sends_the_rest(orthanc, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    image = small_image()
    image.save_as(folder / "good.dcm", enforce_file_format=True)
    (folder / "notes.txt").write_text("not DICOM")
    code, _, err = _cli(capsys, "pacs", "send", str(folder), "--pacs", orthanc.pacs)
    assert code == 1
    assert "sent 1 of 2 file(s)" in err and "notes.txt: not a DICOM file" in err
    assert orthanc.rest("/tools/lookup", image.SOPInstanceUID.encode(), method="POST")


@pytest.mark.slow
def test_listen_analyses_complete_studies_and_sends_results_to_orthanc(orthanc, rg1_uncompressed, tmp_path) -> None:
    import os
    import signal
    import sys

    port = free_port()
    inbox, results, out = tmp_path / "inbox", tmp_path / "csv", tmp_path / "dicom"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")]),
    }
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pneumoview",
            "listen",
            "--port",
            str(port),
            "--into",
            str(inbox),
            "--quiet",
            "0.5",
            "--analyse",
            "--demo",
            "--results",
            str(results),
            "--dicom-out",
            str(out),
            "--send-results",
            orthanc.pacs,
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stderr is not None and "listening as PNEUMOVIEW" in child.stderr.readline()
        report = Client(parse_pacs(f"{LOOPBACK}:{port}:PNEUMOVIEW"), calling_aet="MODALITY").send_files(
            [rg1_uncompressed]
        )
        assert len(report.sent) == 1

        def sr_in_orthanc() -> bool:
            srs = list(out.glob("SR-*.dcm")) if out.is_dir() else []
            uid = srs[0].name[3:-4] if srs else ""
            return bool(uid) and bool(orthanc.rest("/tools/lookup", uid.encode(), method="POST"))

        assert _wait_for(sr_in_orthanc, seconds=240)
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert "study complete: 1 image(s)" in err and "sent 2 of 2 result object(s)" in err
    source = pydicom.dcmread(rg1_uncompressed, stop_before_pixels=True)
    (row,) = list(csv.DictReader(io.StringIO((results / f"{source.StudyInstanceUID}.csv").read_text("utf-8-sig"))))
    assert row["status"] == "analysed" and row["demo"] == "yes"
