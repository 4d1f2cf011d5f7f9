"""The PACS browser dialog and the app's listener (pneumoview/ui/pacs_browser.py) against a real Orthanc.

Lives beside the other PACS tests because it needs their Orthanc fixture (tests/pacs/conftest.py).
"""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import pydicom
from pacs_support import LOOPBACK, free_port, small_image, upload
from pynetdicom import AE
from pynetdicom.sop_class import DigitalXRayImageStorageForPresentation as DX
from PySide6.QtCore import Qt

from pneumoview.pacs.scu import Client, parse_pacs
from pneumoview.results import Provenance, analysed
from pneumoview.settings import Settings, save_settings
from pneumoview.ui.pacs_browser import COLUMNS, ListenerSettingsDialog, PacsBrowserDialog


def _seed(orthanc, tmp_path: Path, patient_id: str, study_uid: str | None = None, count: int = 1) -> list:
    images, paths = [], []
    study = study_uid
    for n in range(count):
        image = small_image(patient_id=patient_id, study_uid=study)
        study = image.StudyInstanceUID
        paths.append(tmp_path / f"seed-{n}.dcm")
        image.save_as(paths[-1], enforce_file_format=True)
        images.append(image)
    if count == 1:
        upload(orthanc, paths[0])  # with dcmtk's storescu where installed
    else:
        assert Client(parse_pacs(orthanc.pacs), calling_aet="MODALITY").send_files(paths).sent == paths
    return images


def test_search_then_retrieve_into_the_inbox(qtbot, orthanc, tmp_path: Path) -> None:
    patient = f"PVUI-{uuid.uuid4().hex[:6]}"
    (image,) = _seed(orthanc, tmp_path, patient)
    settings = Settings(pacs_remote=orthanc.pacs, pacs_inbox=str(tmp_path / "inbox"))
    dialog = PacsBrowserDialog(settings)
    qtbot.addWidget(dialog)
    dialog.patient_id.setText(patient)
    qtbot.mouseClick(dialog.search_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.table.rowCount() == 1, timeout=20000)
    assert dialog.table.item(0, COLUMNS.index("Study UID")).text() == image.StudyInstanceUID
    assert dialog.table.item(0, COLUMNS.index("Patient ID")).text() == patient
    dialog.table.selectRow(0)
    qtbot.waitUntil(dialog.retrieve_button.isEnabled, timeout=5000)
    with qtbot.waitSignal(dialog.studyRetrieved, timeout=20000) as arrived:
        qtbot.mouseClick(dialog.retrieve_button, Qt.MouseButton.LeftButton)
    assert arrived.args[0] == (tmp_path / "inbox" / image.StudyInstanceUID).resolve()
    assert (arrived.args[0] / f"{image.SOPInstanceUID}.dcm").is_file()
    qtbot.waitUntil(lambda: dialog.search_button.isEnabled(), timeout=5000)
    assert "Retrieved 1 study" in dialog.status.text()


def test_retrieve_can_be_cancelled(qtbot, orthanc, tmp_path: Path) -> None:
    images = _seed(orthanc, tmp_path, f"PVCANCEL-{uuid.uuid4().hex[:6]}", count=40)
    settings = Settings(pacs_remote=orthanc.pacs, pacs_inbox=str(tmp_path / "inbox"))
    dialog = PacsBrowserDialog(settings)
    qtbot.addWidget(dialog)
    dialog.patient_id.setText(images[0].PatientID)
    with qtbot.waitSignal(dialog.search().signals.finished, timeout=20000):
        pass
    dialog.table.selectRow(0)
    job = dialog.retrieve_selected()
    assert job is not None and dialog.cancel_button.isEnabled()
    with qtbot.waitSignal(job.signals.cancelled, timeout=20000):
        dialog.cancel()
    assert dialog.status.text() == "Cancelled." and dialog.search_button.isEnabled()
    received = list((tmp_path / "inbox").rglob("*.dcm")) if (tmp_path / "inbox").exists() else []
    assert len(received) < 40
    assert not [p for p in (tmp_path / "inbox").rglob("*") if p.is_file() and p.suffix != ".dcm"]


def test_bad_pacs_text_is_shown_not_raised(qtbot) -> None:
    dialog = PacsBrowserDialog(Settings(pacs_remote="not a pacs"))
    qtbot.addWidget(dialog)
    assert dialog.search() is None
    assert "HOST:PORT:AET" in dialog.status.text()


def test_listener_settings_dialog_round_trip(qtbot, tmp_path: Path) -> None:
    settings = Settings()
    dialog = ListenerSettingsDialog(settings)
    qtbot.addWidget(dialog)
    assert dialog.interface.text() == "127.0.0.1"  # loopback by default
    dialog.ae_title.setText("CLINIC1")
    dialog.port.setValue(4242)
    dialog.allowed.setText("MOD1, MOD2")
    dialog.inbox.setText(str(tmp_path / "in"))
    dialog.on_start.setChecked(True)
    dialog.apply(settings)
    settings.validate()
    assert (settings.pacs_ae_title, settings.pacs_port, settings.pacs_allowed_callers) == (
        "CLINIC1",
        4242,
        ["MOD1", "MOD2"],
    )
    assert settings.pacs_inbox == str(tmp_path / "in") and settings.pacs_listen_on_start


def test_main_window_listener_puts_received_studies_in_the_worklist(qtbot, tmp_path, monkeypatch) -> None:
    from pneumoview.ui.main_window import MainWindow

    home = tmp_path / "home"
    monkeypatch.setenv("PNEUMOVIEW_HOME", str(home))
    port = free_port()
    save_settings(Settings(pacs_port=port, pacs_listen_on_start=True, pacs_inbox=str(tmp_path / "inbox")))
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    assert [a.text() for a in window.menuBar().actions()][-2:] == ["&PACS", "&Help"]  # Help comes last
    assert window.pacs.listener is not None and window.pacs.listener.config.host == LOOPBACK
    window.pacs.listener._studies.clear()
    object.__setattr__(window.pacs.listener.config, "quiet_seconds", 0.3)
    image = small_image()
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(DX)
    assoc = ae.associate(LOOPBACK, port, ae_title="PNEUMOVIEW")
    assert assoc.is_established
    assert assoc.send_c_store(image).Status == 0
    assoc.release()
    qtbot.waitUntil(
        lambda: any(e.record.sop_instance_uid == image.SOPInstanceUID for e in window.session.entries.values()),
        timeout=30000,
    )
    window.pacs.act_listen.setChecked(False)
    assert window.pacs.listener is None
    window.close()


CLASSES = ("pneumoconiosis", "normal")


def _one_image_study(tmp_path: Path, prefix: str) -> tuple[Path, pydicom.Dataset]:
    """A folder ``study`` holding one small image of a new patient (ID ``prefix``-random), and the image."""
    folder = tmp_path / "study"
    folder.mkdir()
    image = small_image(patient_id=f"{prefix}-{uuid.uuid4().hex[:6]}", size=64)
    image.save_as(folder / "image.dcm", enforce_file_format=True)
    return folder, image


def test_send_results_of_selected_images_to_orthanc(qtbot, orthanc, tmp_path, monkeypatch) -> None:
    from pneumoview.pacs.sr import read_sr
    from pneumoview.session import Decision
    from pneumoview.ui.main_window import MainWindow

    monkeypatch.setenv("PNEUMOVIEW_HOME", str(tmp_path / "home"))
    save_settings(Settings(pacs_remote=orthanc.pacs, reviewer_name="Dr Test"))
    folder, image = _one_image_study(tmp_path, "PVSEND")
    window = MainWindow()
    qtbot.addWidget(window)
    with qtbot.waitSignal(window.scanFinished, timeout=60000):
        window.open_paths([folder])
    (key,) = list(window.session.entries)
    entry = window.session.entries[key]
    assert entry.identity is not None
    entry.result = analysed(
        entry.identity,
        0.31,
        class_names=CLASSES,
        demo=True,
        provenance=Provenance(bundle_id="m-1", bundle_name="M", bundle_fingerprint="d" * 64, threshold=0.5),
    )
    entry.decision = Decision(decision="disagree", comment="", reviewer="Dr Test")
    monkeypatch.setattr(window, "selected_keys", lambda: [key])
    window.pacs.act_send.trigger()  # the menu entry
    job = window.pacs.send_job
    assert job is not None
    with qtbot.waitSignal(job.signals.finished, timeout=60000) as done:
        pass
    assert len(done.args[0].sent) == 3 and done.args[0].failed == []  # result SR, lung-crop SC, decision SR
    study = next(i["ID"] for i in orthanc.rest("/tools/lookup", image.StudyInstanceUID.encode(), method="POST"))
    instances = orthanc.rest(f"/studies/{study}/instances")
    assert len(instances) == 3  # only the results were sent, into the source's study
    back = [pydicom.dcmread(io.BytesIO(orthanc.rest(f"/instances/{i['ID']}/file"))) for i in instances]
    srs = [read_sr(ds) for ds in back if ds.Modality == "SR"]
    assert sorted(v.get("decision", "") for v in srs) == ["", "disagree"]
    assert all(v["finding"] == "Absent" and v["source_uids"] == [image.SOPInstanceUID] for v in srs)
    assert all(str(ds.PatientID) == image.PatientID for ds in back)
    window.close()


def test_new_results_are_sent_automatically_when_asked(qtbot, orthanc, tmp_path, monkeypatch) -> None:
    from pneumoview.ui.main_window import MainWindow

    monkeypatch.setenv("PNEUMOVIEW_HOME", str(tmp_path / "home"))
    save_settings(Settings(pacs_remote=orthanc.pacs, pacs_send_automatically=True))
    folder, image = _one_image_study(tmp_path, "PVAUTO")
    window = MainWindow()
    qtbot.addWidget(window)
    assert window.pacs.act_auto.isChecked()
    with qtbot.waitSignal(window.scanFinished, timeout=60000):
        window.open_paths([folder])
    (key,) = list(window.session.entries)
    identity = window.session.entries[key].identity
    assert identity is not None
    result = analysed(
        identity,
        0.8,
        class_names=CLASSES,
        demo=True,
        analysed_at="2024-01-02T03:04:05Z",
        provenance=Provenance(bundle_id="m-2", bundle_name="M", bundle_fingerprint="e" * 64, threshold=0.5),
    )
    window.session.set_results([(key, result)])

    def sent() -> bool:
        found = orthanc.rest("/tools/lookup", image.StudyInstanceUID.encode(), method="POST")
        return bool(found) and len(orthanc.rest(f"/studies/{found[0]['ID']}/instances")) == 2  # SR + SC

    qtbot.waitUntil(sent, timeout=60000)
    job = window.pacs.send_job
    window.session.set_results([(key, result)])  # the same result again: not sent twice
    qtbot.wait(2500)
    assert window.pacs.send_job is job
    window.pacs.act_auto.setChecked(False)
    assert not window.settings.pacs_send_automatically
    window.close()
