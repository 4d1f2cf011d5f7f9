"""DICOMweb client (dicomweb-client): QIDO-RS search, WADO-RS retrieve, STOW-RS store (PS3.18).

The same answers as the DIMSE client (:class:`~pneumoview.pacs.scu.StudyMatch`,
:class:`~pneumoview.pacs.scu.TransferReport`), so commands and the app treat both alike.
Retrieved instances land in an :class:`~pneumoview.pacs.scp.Inbox` (valid UIDs only, atomic).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from pneumoview.errors import CancelledError, PacsError
from pneumoview.pacs.scp import Inbox, check_received
from pneumoview.pacs.scu import StudyMatch, TransferReport

#: QIDO-RS attribute tags asked for (PS3.18 10.6.3.3.1): description, accession, modalities, count.
STUDY_FIELDS = ("StudyDescription", "AccessionNumber", "ModalitiesInStudy", "NumberOfStudyRelatedInstances")


class WebClient:
    """One DICOMweb service root (e.g. ``http://127.0.0.1:8042/dicom-web``)."""

    def __init__(self, url: str, *, timeout: float = 60.0) -> None:
        from dicomweb_client.api import DICOMwebClient

        if not url.startswith(("http://", "https://")):
            raise PacsError(f"DICOMweb URL must start with http:// or https://, not {url!r}")
        self.url = url.rstrip("/")
        self._client = DICOMwebClient(url=self.url)
        session = self._client._session
        session.request = _with_timeout(session.request, timeout)  # type: ignore[method-assign]

    def find_studies(
        self,
        *,
        patient_id: str = "",
        patient_name: str = "",
        date: str = "",
        modalities: Sequence[str] = (),
        limit: int = 500,
    ) -> list[StudyMatch]:
        filters = {
            k: v
            for k, v in (
                ("PatientID", patient_id),
                ("PatientName", patient_name),
                ("StudyDate", date),
                ("ModalitiesInStudy", ",".join(m.strip().upper() for m in modalities if m.strip())),
            )
            if v
        }
        try:
            answers = self._client.search_for_studies(
                search_filters=filters, fields=list(STUDY_FIELDS), limit=limit, fuzzymatching=False
            )
        except Exception as exc:
            raise PacsError(f"QIDO-RS search at {self.url} failed: {_why(exc)}") from exc
        return [_study_from_json(a) for a in answers]

    def get_study(
        self,
        study_uid: str,
        inbox: Inbox,
        *,
        progress: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> TransferReport:
        """WADO-RS retrieve of every instance of the study, written one by one into ``inbox``."""
        report = TransferReport()
        try:
            instances = self._client.search_for_instances(study_instance_uid=study_uid)
        except Exception as exc:
            raise PacsError(f"QIDO-RS instance search at {self.url} failed: {_why(exc)}") from exc
        total = len(instances)
        for index, answer in enumerate(instances, 1):
            if cancel is not None and cancel.is_set():
                raise CancelledError("retrieval cancelled")
            series = _first(answer, "0020000E")
            sop = _first(answer, "00080018")
            try:
                dataset = self._client.retrieve_instance(study_uid, series, sop)
                study, sop_uid = check_received(dataset, sop)
                from pneumoview.pacs.export import encode

                report.written.append(inbox.write(study, sop_uid, encode(dataset)))
            except (ValueError, OSError) as exc:
                report.failed.append((str(sop)[:64], str(exc)))
            except Exception as exc:  # noqa: BLE001 - one bad instance is reported, the rest retrieved
                report.failed.append((str(sop)[:64], _why(exc)))
            if progress is not None:
                progress(index, total)
        return report

    def send_files(
        self, files: Iterable[str | os.PathLike[str]], *, progress: Callable[[int, int], None] | None = None
    ) -> TransferReport:
        """STOW-RS each file (one request per file, so one bad file does not fail the others)."""
        import pydicom

        report = TransferReport()
        paths = [Path(f) for f in files]
        for index, path in enumerate(paths, 1):
            try:
                dataset = pydicom.dcmread(path)
            except Exception as exc:  # noqa: BLE001 - unreadable files are reported, the rest sent
                report.failed.append((str(path), f"not a DICOM file ({type(exc).__name__})"))
                continue
            try:
                answer = self._client.store_instances([dataset])
                if answer is not None and answer.get("FailedSOPSequence"):  # (0008,1198), PS3.18 10.5.3
                    report.failed.append((str(path), "STOW-RS: instance refused by the server"))
                else:
                    report.sent.append(path)
            except Exception as exc:  # noqa: BLE001
                report.failed.append((str(path), f"STOW-RS failed: {_why(exc)}"))
            if progress is not None:
                progress(index, len(paths))
        return report


def _with_timeout(request, timeout: float):
    def call(*args, **kwargs):
        kwargs.setdefault("timeout", timeout)
        return request(*args, **kwargs)

    return call


def _why(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def _first(answer: dict, tag: str) -> str:
    value = answer.get(tag, {}).get("Value") or [""]
    item = value[0]
    if isinstance(item, dict):  # PN: {"Alphabetic": ...}
        return str(item.get("Alphabetic", ""))
    return str(item)


def _study_from_json(answer: dict) -> StudyMatch:
    modalities = answer.get("00080061", {}).get("Value") or []
    count = _first(answer, "00201208")
    return StudyMatch(
        study_uid=_first(answer, "0020000D"),
        patient_id=_first(answer, "00100020"),
        patient_name=_first(answer, "00100010"),
        study_date=_first(answer, "00080020"),
        study_description=_first(answer, "00081030"),
        accession_number=_first(answer, "00080050"),
        modalities=tuple(str(m) for m in modalities),
        instances=int(count) if count.isdigit() else None,
    )
