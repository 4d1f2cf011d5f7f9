"""Storage SCP: inbox layout, allow-list, hostile and malformed input, load, killed clients, TLS."""

from __future__ import annotations

import io
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
import pytest
from pacs_support import LOOPBACK, small_image
from pynetdicom import AE
from pynetdicom.sop_class import DigitalXRayImageStorageForPresentation, Verification

from pneumoview.pacs.scp import Inbox, ListenerConfig, ListenerError, ListenerEvent, StorageListener
from pneumoview.pacs.uids import new_uid

DX = DigitalXRayImageStorageForPresentation


@pytest.fixture
def events() -> list[ListenerEvent]:
    return []


@pytest.fixture
def listener(tmp_path: Path, events: list[ListenerEvent]):
    scp = StorageListener(ListenerConfig(inbox=tmp_path / "inbox", port=0, quiet_seconds=0.5), events.append)
    scp.start()
    yield scp
    scp.stop()


def _store(port: int, datasets, *, calling: str = "MODALITY", called: str = "PNEUMOVIEW", tls=None) -> list[int]:
    ae = AE(ae_title=calling)
    ae.add_requested_context(DX)
    assoc = ae.associate(LOOPBACK, port, ae_title=called, tls_args=tls)
    if not assoc.is_established:
        return [-1]
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def _raw_store(port: int, ds, *, calling: str = "FUZZER", body: bytes | None = None) -> int:
    """Send ``ds`` in a C-STORE built by hand, bypassing pynetdicom's client-side UID checks (a hostile client)."""
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.dsutils import encode

    ae = AE(ae_title=calling)
    ae.add_requested_context(DX)
    assoc = ae.associate(LOOPBACK, port, ae_title="PNEUMOVIEW")
    assert assoc.is_established
    try:
        context = assoc.accepted_contexts[0]
        req = C_STORE()
        req.MessageID = 1
        req.Priority = 2
        req.AffectedSOPClassUID = DX
        req._affected_sop_instance_uid = ds.SOPInstanceUID  # unchecked, as a hostile client would send it
        req.DataSet = io.BytesIO(encode(ds, False, True) if body is None else body)
        assoc._reactor_checkpoint.clear()  # pause the reactor as pynetdicom's own send_c_store does
        while not assoc._is_paused:
            time.sleep(0.0001)
        assoc.dimse.send_msg(req, context.context_id)
        _, rsp = assoc.dimse.get_msg(block=True)
        assoc._reactor_checkpoint.set()
        return int(rsp.Status) if rsp is not None else -1
    finally:
        assoc.release()


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_received_images_land_in_study_folders_and_complete_after_quiet_period(listener, events) -> None:
    study = new_uid()
    images = [small_image(study_uid=study) for _ in range(3)]
    assert _store(listener.port, images) == [0, 0, 0]
    expected = {listener.inbox.root / study / f"{ds.SOPInstanceUID}.dcm" for ds in images}
    assert set(_files(listener.inbox.root)) == expected
    assert pydicom.dcmread(min(expected)).PatientID == "PV-TEST"
    deadline = time.monotonic() + 5
    while not any(e.kind == "study-complete" for e in events) and time.monotonic() < deadline:
        time.sleep(0.05)
    complete = [e for e in events if e.kind == "study-complete"]
    assert len(complete) == 1 and complete[0].study_uid == study and complete[0].count == 3
    assert complete[0].path == listener.inbox.root / study


def test_default_bind_is_loopback_and_echo_works(listener) -> None:
    assert ListenerConfig(inbox=Path("x")).host == "127.0.0.1"
    ae = AE(ae_title="ECHOER")
    ae.add_requested_context(Verification)
    assoc = ae.associate(LOOPBACK, listener.port, ae_title="PNEUMOVIEW")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assoc.release()


def test_callers_outside_the_allow_list_are_rejected(tmp_path: Path, events, caplog) -> None:
    config = ListenerConfig(inbox=tmp_path / "inbox", port=0, allowed_callers=("GOODMOD",))
    scp = StorageListener(config, events.append)
    scp.start()
    try:
        with caplog.at_level(logging.WARNING, logger="pneumoview.pacs.scp"):
            assert _store(scp.port, [small_image()], calling="EVILMOD") == [-1]
            assert _store(scp.port, [small_image()], calling="GOODMOD") == [0]
    finally:
        scp.stop()
    assert len(_files(tmp_path / "inbox")) == 1
    assert any(e.kind == "rejected" and e.calling_ae == "EVILMOD" for e in events)
    assert "rejected an association from EVILMOD" in caplog.text


@pytest.mark.parametrize("field", ["SOPInstanceUID", "StudyInstanceUID"])
@pytest.mark.parametrize("hostile", ["../../x", "../" * 20 + "etc", "1." + "2" * 200, "/tmp/abs", "1.2.3\\..\\x"])
def test_hostile_uids_are_refused_and_nothing_escapes(tmp_path: Path, field: str, hostile: str, caplog) -> None:
    inbox = tmp_path / "box" / "inbox"
    scp = StorageListener(ListenerConfig(inbox=inbox, port=0))
    scp.start()
    before = set(_files(tmp_path))
    ds = small_image()
    setattr(ds, field, hostile)
    if field == "SOPInstanceUID":
        ds.file_meta.MediaStorageSOPInstanceUID = hostile
    try:
        with caplog.at_level(logging.WARNING, logger="pneumoview.pacs.scp"):
            statuses = [_raw_store(scp.port, ds)]
        # refused by our handler, or (a UID over 64 characters) by pynetdicom's DIMSE decoder, which aborts
        assert statuses[0] in (0xA900, 0xC210, -1)
        assert _store(scp.port, [small_image()]) == [0]  # still running
    finally:
        scp.stop()
    after = set(_files(tmp_path))
    new = after - before
    assert len(new) == 1 and all(p.is_relative_to(inbox) and p.suffix == ".dcm" for p in new)
    assert not list(Path("/tmp").glob("abs*.dcm"))
    assert "refused a C-STORE from FUZZER" in caplog.text or "association from FUZZER aborted" in caplog.text


def test_inbox_target_refuses_anything_but_uids(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path)
    assert inbox.target("1.2.3", "4.5.6") == tmp_path.resolve() / "1.2.3" / "4.5.6.dcm"
    for study, sop in (("..", "1.2"), ("1.2", ".."), ("1.2", "a/b"), ("", "1.2"), ("1.2", "1." + "1" * 64)):
        with pytest.raises(ValueError):
            inbox.target(study, sop)


def test_malformed_dataset_is_refused_logged_and_the_listener_keeps_running(listener, caplog) -> None:
    from pynetdicom.dsutils import encode

    good = small_image()
    body = encode(good, False, True)
    cut = body.index(b"\x08\x00\x18\x00")  # (0008,0018) SOP Instance UID: give it a 32 KiB length, then stop
    broken = body[:cut] + b"\x08\x00\x18\x00UI\xff\x7f" + os.urandom(64)
    with caplog.at_level(logging.WARNING, logger="pneumoview.pacs.scp"):
        status = _raw_store(listener.port, good, body=broken)
    assert status in (0xC210, 0xA900)
    assert "refused a C-STORE from FUZZER" in caplog.text
    assert listener.refused == 1 and _files(listener.inbox.root) == []
    assert _store(listener.port, [small_image()]) == [0]


def test_garbage_on_the_socket_does_not_stop_the_listener(listener) -> None:
    for payload in (b"GET / HTTP/1.1\r\n\r\n", os.urandom(4096), b"\x01\x00\x00\x00\xff\xff\xff\xff" + b"\x00" * 64):
        with socket.create_connection((LOOPBACK, listener.port), timeout=5) as sock:
            sock.sendall(payload)
            sock.settimeout(1)
            try:
                sock.recv(1024)
            except (TimeoutError, ConnectionResetError):
                pass
    assert _store(listener.port, [small_image()]) == [0]
    assert len(_files(listener.inbox.root)) == 1


@pytest.mark.parametrize("max_associations", [100, None], ids=["100-associations", "default-limit-with-retries"])
def test_survives_100_concurrent_small_stores(tmp_path: Path, max_associations: int | None) -> None:
    config = ListenerConfig(inbox=tmp_path / "inbox", port=0)
    if max_associations is not None:
        config = ListenerConfig(inbox=tmp_path / "inbox", port=0, max_associations=max_associations)
    scp = StorageListener(config)
    scp.start()
    images = [small_image() for _ in range(100)]

    def send(ds) -> int:  # a modality retries when the listener is at its association limit
        for _ in range(200):
            status = _store(scp.port, [ds], calling="LOADER")[0]
            if status != -1 or max_associations is not None:
                return status
            time.sleep(0.05)
        return -1

    try:
        with ThreadPoolExecutor(max_workers=100) as pool:
            statuses = list(pool.map(send, images))
        assert statuses == [0] * 100
        assert _store(scp.port, [small_image()]) == [0]
    finally:
        scp.stop()
    files = _files(tmp_path / "inbox")
    assert len(files) == 101 and not [p for p in files if p.name.startswith(".")]
    assert {p.stem for p in files} >= {ds.SOPInstanceUID for ds in images}


CLIENT = textwrap.dedent("""
    import sys, time
    from pynetdicom import AE
    from pynetdicom.sop_class import DigitalXRayImageStorageForPresentation as DX
    sys.path.insert(0, sys.argv[2])
    from pacs_support import small_image
    ds = small_image(size=1024)  # 2 MiB of pixel data: about 128 P-DATA PDUs of 16 KiB
    ae = AE(ae_title="KILLED")
    ae.add_requested_context(DX)
    assoc = ae.associate("127.0.0.1", int(sys.argv[1]), ae_title="PNEUMOVIEW", max_pdu=16382)
    send, sent = assoc.dul.send_pdu, [0]

    def send_some(pdu):  # send part of the dataset, say so, then hang until killed
        sent[0] += 1
        if sent[0] == 40:
            print("partial", flush=True)
            time.sleep(600)
        send(pdu)

    assoc.dul.send_pdu = send_some
    assoc.send_c_store(ds)
""")


def test_client_killed_mid_transfer_leaves_no_partial_file(listener, tmp_path: Path) -> None:
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")]),
    }
    client = subprocess.Popen(
        [sys.executable, str(script), str(listener.port), str(Path(__file__).parent)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert client.stdout is not None and client.stdout.readline().strip() == "partial"
        time.sleep(0.3)  # the first 39 PDUs (about 600 KiB) reach the listener
        assert client.poll() is None
        client.send_signal(signal.SIGKILL)
        client.wait(timeout=10)
    finally:
        if client.poll() is None:
            client.kill()
    time.sleep(0.5)
    assert _files(listener.inbox.root) == []
    assert _store(listener.port, [small_image()]) == [0]
    assert len(_files(listener.inbox.root)) == 1


def test_bad_config_and_busy_port_raise_listener_error(tmp_path: Path) -> None:
    with pytest.raises(ListenerError):
        StorageListener(ListenerConfig(inbox=tmp_path, ae_title="X" * 17))
    with pytest.raises(ListenerError):
        StorageListener(ListenerConfig(inbox=tmp_path, port=70000))
    first = StorageListener(ListenerConfig(inbox=tmp_path, port=0))
    first.start()
    try:
        with pytest.raises(ListenerError):
            StorageListener(ListenerConfig(inbox=tmp_path, port=first.port)).start()
    finally:
        first.stop()


def test_tls_listener_accepts_tls_clients_only(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not installed: cannot make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    scp = StorageListener(ListenerConfig(inbox=tmp_path / "inbox", port=0, ssl_context=server_ctx))
    scp.start()
    try:
        client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
        assert _store(scp.port, [small_image()], tls=(client_ctx, "127.0.0.1")) == [0]
        assert _store(scp.port, [small_image()]) == [-1]  # plain DICOM is not accepted on a TLS port
    finally:
        scp.stop()
    assert len(_files(tmp_path / "inbox")) == 1


def test_event_handler_errors_do_not_stop_the_listener(tmp_path: Path) -> None:
    calls = threading.Event()

    def broken(event: ListenerEvent) -> None:
        calls.set()
        raise RuntimeError("handler bug")

    scp = StorageListener(ListenerConfig(inbox=tmp_path / "inbox", port=0), broken)
    scp.start()
    try:
        assert _store(scp.port, [small_image(), small_image()]) == [0, 0]
    finally:
        scp.stop()
    assert calls.is_set() and len(_files(tmp_path / "inbox")) == 2
