"""DIMSE client: C-ECHO, C-FIND (Study Root, STUDY level), C-GET / C-MOVE a study, C-STORE files.

A PACS is addressed as ``HOST:PORT:AET`` (:func:`parse_pacs`). Retrieved instances land in an
:class:`~pneumoview.pacs.scp.Inbox` exactly like received ones (valid UIDs only, atomic writes).
Every call opens one association and releases it; a refusal or a failure status raises
:class:`~pneumoview.pacs.PacsError` with the reason. Long calls take ``progress(done, total)``
and a ``cancel`` event (checked between responses; cancelling sends C-CANCEL and aborts).
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pneumoview.errors import CancelledError, PacsError
from pneumoview.pacs.scp import DEFAULT_AE_TITLE, Inbox, check_received

log = logging.getLogger("pneumoview.pacs.scu")

#: SOP classes (PS3.4 Annex A / C.6.2): Verification and the Study Root Query/Retrieve models.
VERIFICATION = "1.2.840.10008.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
#: Storage SOP classes accepted during a C-GET (PS3.4 Annex B; at most 128 contexts per association).
RETRIEVE_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image
    "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # Digital X-Ray Image - For Processing
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image (viewable, reported as not diagnosable)
    "1.2.840.10008.5.1.4.1.1.4",  # MR Image (idem)
)
#: Transfer syntaxes offered for retrieval: uncompressed first, then what pydicom's plugins decode.
RETRIEVE_TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.5",
)


@dataclass(frozen=True)
class PacsAddress:
    host: str
    port: int
    ae_title: str

    def __str__(self) -> str:
        return f"{self.host}:{self.port}:{self.ae_title}"


def parse_pacs(text: str) -> PacsAddress:
    """``"HOST:PORT:AET"`` -> :class:`PacsAddress`; PacsError naming what is wrong."""
    parts = text.rsplit(":", 2)
    if len(parts) != 3 or not parts[0] or not parts[2]:
        raise PacsError(f"PACS must be HOST:PORT:AET, not {text!r}")
    host, port_text, aet = parts
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise PacsError(f"PACS port must be a number within 1-65535, not {port_text!r}")
    if len(aet) > 16:
        raise PacsError(f"AE title {aet!r} is longer than 16 characters")
    return PacsAddress(host, int(port_text), aet)


@dataclass
class StudyMatch:
    """One C-FIND answer at STUDY level (the attributes PS3.4 C.6.2.1 returns on request)."""

    study_uid: str
    patient_id: str = ""
    patient_name: str = ""
    study_date: str = ""
    study_description: str = ""
    accession_number: str = ""
    modalities: tuple[str, ...] = ()
    instances: int | None = None


@dataclass
class TransferReport:
    """What a C-GET or C-STORE run did."""

    written: list[Path] = field(default_factory=list)
    sent: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file or SOP UID, reason)


class Client:
    """One calling AE talking to one PACS."""

    def __init__(
        self,
        pacs: PacsAddress,
        *,
        calling_aet: str = DEFAULT_AE_TITLE,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.pacs = pacs
        self.calling_aet = calling_aet
        self.timeout = timeout
        self.ssl_context = ssl_context

    def _ae(self):  # -> pynetdicom.AE
        from pynetdicom import AE

        ae = AE(ae_title=self.calling_aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        return ae

    def _associate(self, ae, **kwargs):  # -> pynetdicom.association.Association
        tls = (self.ssl_context, self.pacs.host) if self.ssl_context is not None else None
        assoc = ae.associate(self.pacs.host, self.pacs.port, ae_title=self.pacs.ae_title, tls_args=tls, **kwargs)
        if not assoc.is_established:
            why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "failed"
            raise PacsError(f"association with {self.pacs} {why}")
        return assoc

    # --- C-ECHO ----------------------------------------------------------------------------
    def echo(self) -> None:
        ae = self._ae()
        ae.add_requested_context(VERIFICATION)
        assoc = self._associate(ae)
        try:
            status = assoc.send_c_echo()
        finally:
            assoc.release()
        if not status or status.Status != 0:
            raise PacsError(f"C-ECHO to {self.pacs} failed")

    # --- C-FIND ----------------------------------------------------------------------------
    def find_studies(
        self,
        *,
        patient_id: str = "",
        patient_name: str = "",
        date: str = "",
        modalities: Sequence[str] = (),
        limit: int = 500,
    ) -> list[StudyMatch]:
        """Studies matching the keys (DICOM wildcards ``*``/``?`` and date ranges ``YYYYMMDD-YYYYMMDD``)."""
        from pydicom.dataset import Dataset

        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ""
        query.PatientID = patient_id
        query.PatientName = patient_name
        query.StudyDate = date
        query.StudyDescription = ""
        query.AccessionNumber = ""
        query.ModalitiesInStudy = "\\".join(m.strip().upper() for m in modalities if m.strip())
        query.NumberOfStudyRelatedInstances = ""
        ae = self._ae()
        ae.add_requested_context(STUDY_ROOT_FIND)
        assoc = self._associate(ae)
        matches: list[StudyMatch] = []
        try:
            for status, identifier in assoc.send_c_find(query, STUDY_ROOT_FIND):
                _check_status(status, "C-FIND", self.pacs)
                if identifier is not None and status.Status in (0xFF00, 0xFF01):
                    matches.append(_study_match(identifier))
                    if len(matches) >= limit:
                        break
        finally:
            assoc.release()
        return matches

    # --- C-GET -----------------------------------------------------------------------------
    def get_study(
        self,
        study_uid: str,
        inbox: Inbox,
        *,
        progress: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> TransferReport:
        """C-GET the whole study into ``inbox`` (our AE acts as Storage SCP on the same association)."""
        from pydicom.dataset import Dataset
        from pynetdicom import build_role, evt

        report = TransferReport()
        ae = self._ae()
        ae.add_requested_context(STUDY_ROOT_GET)
        roles = []
        for uid in RETRIEVE_SOP_CLASSES:
            ae.add_requested_context(uid, list(RETRIEVE_TRANSFER_SYNTAXES))
            roles.append(build_role(uid, scp_role=True))

        def on_store(event) -> int:
            try:
                dataset = event.dataset
                study, sop = check_received(dataset, str(event.request.AffectedSOPInstanceUID))
                report.written.append(inbox.write(study, sop, event.encoded_dataset(include_meta=True)))
            except (ValueError, OSError) as exc:
                report.failed.append((str(event.request.AffectedSOPInstanceUID)[:64], str(exc)))
                return 0xA900
            except Exception as exc:  # noqa: BLE001 - undecodable bytes from the PACS: refuse this one instance
                report.failed.append((str(event.request.AffectedSOPInstanceUID)[:64], type(exc).__name__))
                return 0xC210
            return 0x0000

        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study_uid
        assoc = self._associate(ae, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
        try:
            for status, _ in assoc.send_c_get(query, STUDY_ROOT_GET):
                if cancel is not None and cancel.is_set():
                    assoc.abort()
                    raise CancelledError("retrieval cancelled")
                _check_status(status, "C-GET", self.pacs)
                if progress is not None and status and "NumberOfRemainingSuboperations" in status:
                    done = int(status.get("NumberOfCompletedSuboperations", 0) or 0)
                    progress(done, done + int(status.NumberOfRemainingSuboperations or 0))
        finally:
            if assoc.is_established:
                assoc.release()
        if progress is not None:
            progress(len(report.written), len(report.written) + len(report.failed))
        return report

    # --- C-MOVE ----------------------------------------------------------------------------
    def move_study(self, study_uid: str, destination_aet: str) -> None:
        """Ask the PACS to C-STORE the study to ``destination_aet`` (e.g. our own listener, known to the PACS)."""
        from pydicom.dataset import Dataset

        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study_uid
        ae = self._ae()
        ae.add_requested_context(STUDY_ROOT_MOVE)
        assoc = self._associate(ae)
        try:
            for status, _ in assoc.send_c_move(query, destination_aet, STUDY_ROOT_MOVE):
                _check_status(status, "C-MOVE", self.pacs)
        finally:
            assoc.release()

    # --- C-STORE ---------------------------------------------------------------------------
    def send_files(
        self, files: Iterable[str | os.PathLike[str]], *, progress: Callable[[int, int], None] | None = None
    ) -> TransferReport:
        """C-STORE each DICOM file (streamed from disk, not decoded); per-file failures are reported."""
        import pydicom

        report = TransferReport()
        items: list[tuple[Path, str, str]] = []
        for name in files:
            path = Path(name)
            try:
                header = pydicom.dcmread(path, stop_before_pixels=True)
                items.append((path, str(header.SOPClassUID), str(header.file_meta.TransferSyntaxUID)))
            except Exception as exc:  # noqa: BLE001 - a file we cannot read is reported, the rest is sent
                report.failed.append((str(path), f"not a DICOM file ({type(exc).__name__})"))
        if not items:
            return report
        ae = self._ae()
        contexts = sorted({(c, t) for _, c, t in items})
        if len(contexts) > 128:
            raise PacsError("more than 128 SOP class / transfer syntax pairs: send in smaller batches")
        for sop_class, syntax in contexts:
            ae.add_requested_context(sop_class, syntax)
        assoc = self._associate(ae)
        try:
            for index, (path, _, _) in enumerate(items, 1):
                status = assoc.send_c_store(path)
                code = int(status.Status) if status and "Status" in status else -1
                if code in (0x0000, 0xB000, 0xB007, 0xB006):
                    report.sent.append(path)
                else:
                    report.failed.append(
                        (
                            str(path),
                            f"C-STORE status 0x{code & 0xFFFF:04X}"
                            if code >= 0
                            else "no response (association lost or context refused)",
                        )
                    )
                if progress is not None:
                    progress(index, len(items))
        finally:
            if assoc.is_established:
                assoc.release()
        return report


def _check_status(status, what: str, pacs: PacsAddress) -> None:
    if not status or "Status" not in status:
        raise PacsError(f"{what}: no response from {pacs} (timeout or association aborted)")
    code = int(status.Status)
    if code in (0x0000, 0xFF00, 0xFF01, 0xB000):
        return
    if code == 0xFE00:
        raise CancelledError(f"{what} cancelled by {pacs}")
    raise PacsError(f"{what} refused by {pacs}: status 0x{code:04X}")


def _study_match(identifier) -> StudyMatch:
    modalities = identifier.get("ModalitiesInStudy", "") or ""
    if isinstance(modalities, str):
        modalities = [modalities] if modalities else []
    count = identifier.get("NumberOfStudyRelatedInstances", None)
    return StudyMatch(
        study_uid=str(identifier.get("StudyInstanceUID", "")),
        patient_id=str(identifier.get("PatientID", "") or ""),
        patient_name=str(identifier.get("PatientName", "") or ""),
        study_date=str(identifier.get("StudyDate", "") or ""),
        study_description=str(identifier.get("StudyDescription", "") or ""),
        accession_number=str(identifier.get("AccessionNumber", "") or ""),
        modalities=tuple(str(m) for m in modalities),
        instances=int(count) if count not in (None, "") else None,
    )


def dicom_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files named, and every regular file under folders named (sorted), hidden files skipped."""
    out: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            out.extend(p for p in sorted(path.rglob("*")) if p.is_file() and not p.name.startswith("."))
        elif path.is_file():
            out.append(path)
        else:
            raise PacsError("no such file or folder", path=path)
    return out
