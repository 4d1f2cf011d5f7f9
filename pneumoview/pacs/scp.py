"""Storage SCP: receives images over DICOM (C-STORE, PS3.4 Annex B) into a managed inbox.

* **Inbox layout**: ``INBOX/<StudyInstanceUID>/<SOPInstanceUID>.dcm``. Both UIDs must be valid
  (PS3.5 9.1: digits and dots, <= 64 characters), so no received value can name a path outside the
  inbox (``../x`` or an over-long UID is refused with status 0xA900); the resolved target is
  checked to lie inside the inbox as well.
* **Atomic**: a file is written through :mod:`pneumoview.atomic` (temporary sibling, fsync,
  ``os.replace``) only after the whole dataset has arrived, so a client killed mid-transfer leaves
  nothing behind.
* **Who may send**: the bind address defaults to loopback (127.0.0.1); ``allowed_callers``
  (calling AE titles) rejects every other caller at association time; TLS through an
  ``ssl.SSLContext``.
* **Malformed data** is refused with a DIMSE status and a logged reason (0xC210 cannot
  understand, 0xA900 identity missing or hostile); the listener keeps running.
* **Study complete**: when a study has received nothing for ``quiet_seconds``, a
  ``study-complete`` :class:`ListenerEvent` is emitted (the app adds it to the worklist, the
  ``listen --analyse`` command analyses it).

Logs never carry patient identifiers or paths: only calling AE, SOP class and counts.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pneumoview.atomic import atomic_write_bytes
from pneumoview.errors import PacsError
from pneumoview.pacs.uids import is_valid_uid

if TYPE_CHECKING:
    from pynetdicom.transport import ThreadedAssociationServer

log = logging.getLogger("pneumoview.pacs.scp")

DEFAULT_AE_TITLE = "PNEUMOVIEW"
DEFAULT_PORT = 11112
LOOPBACK = "127.0.0.1"
#: DIMSE status codes (PS3.4 B.2.3 / PS3.7 C).
SUCCESS, OUT_OF_RESOURCES, IDENTITY_REFUSED, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xA900, 0xC210


class ListenerError(PacsError):
    """The Storage SCP cannot start (port in use, bad AE title, no inbox)."""


@dataclass(frozen=True)
class ListenerConfig:
    inbox: Path
    ae_title: str = DEFAULT_AE_TITLE
    port: int = DEFAULT_PORT  # 0: any free port (see StorageListener.port)
    host: str = LOOPBACK
    allowed_callers: tuple[str, ...] = ()  # calling AE titles; empty: any caller that can reach the port
    quiet_seconds: float = 10.0
    max_associations: int = 32
    ssl_context: ssl.SSLContext | None = None

    def check(self) -> None:
        title = self.ae_title.strip()
        if not title or len(title) > 16 or not title.isascii() or "\\" in title:
            raise ListenerError(f"AE title must be 1-16 ASCII characters without '\\', not {self.ae_title!r}")
        if not 0 <= self.port <= 65535:
            raise ListenerError(f"port must be within 0-65535, not {self.port}")
        if self.quiet_seconds <= 0:
            raise ListenerError("the quiet period must be positive")


@dataclass(frozen=True)
class ListenerEvent:
    """``kind``: "stored" | "refused" | "rejected" | "study-complete"; no patient identifiers."""

    kind: str
    study_uid: str = ""
    path: Path | None = None  # stored file, or the study folder for "study-complete"
    count: int = 0  # files of the study received so far (stored, study-complete)
    reason: str = ""
    calling_ae: str = ""


@dataclass
class _Study:
    last: float
    count: int = 0


class Inbox:
    """The managed inbox: where a received or retrieved instance is allowed to land, and nowhere else."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()

    def target(self, study_uid: str, sop_uid: str) -> Path:
        """``root/<study>/<sop>.dcm``; ValueError for a UID that is not a valid UID (path safety)."""
        for name, uid in (("StudyInstanceUID", study_uid), ("SOPInstanceUID", sop_uid)):
            if not is_valid_uid(uid):
                raise ValueError(f"{name} is not a valid UID")
        target = (self.root / study_uid / f"{sop_uid}.dcm").resolve()
        if not target.is_relative_to(self.root) or target.parent.parent != self.root:
            raise ValueError("the instance would land outside the inbox")
        return target

    def write(self, study_uid: str, sop_uid: str, part10: bytes) -> Path:
        """Write one DICOM Part 10 file atomically; returns its path."""
        target = self.target(study_uid, sop_uid)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, part10)
        return target


def check_received(dataset: object, affected_sop_uid: str) -> tuple[str, str]:
    """(study UID, SOP Instance UID) of a received dataset; ValueError with the reason otherwise."""
    study = str(getattr(dataset, "StudyInstanceUID", "") or "")
    sop = str(getattr(dataset, "SOPInstanceUID", "") or "")
    if not is_valid_uid(sop) or not is_valid_uid(study):
        raise ValueError("SOP Instance UID or Study Instance UID missing or not a valid UID")
    if sop != affected_sop_uid:
        raise ValueError("the dataset's SOP Instance UID differs from the request's Affected SOP Instance UID")
    return study, sop


class StorageListener:
    """A pynetdicom Storage SCP writing into an :class:`Inbox`; events go to ``on_event`` (any thread)."""

    def __init__(self, config: ListenerConfig, on_event: Callable[[ListenerEvent], None] | None = None) -> None:
        config.check()
        self.config = config
        self.inbox = Inbox(config.inbox)
        self._on_event = on_event
        self._server: ThreadedAssociationServer | None = None  # while running
        self._studies: dict[str, _Study] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self.stored = 0
        self.refused = 0

    # --- life cycle ----------------------------------------------------------------------
    def start(self) -> None:
        from pynetdicom import AE, AllStoragePresentationContexts, VerificationPresentationContexts, evt

        try:
            self.inbox.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ListenerError(f"cannot create the inbox: {exc.strerror or exc}") from exc
        ae = AE(ae_title=self.config.ae_title.strip())
        ae.supported_contexts = AllStoragePresentationContexts + VerificationPresentationContexts
        ae.maximum_associations = self.config.max_associations
        if self.config.allowed_callers:
            ae.require_calling_aet = [a.strip() for a in self.config.allowed_callers if a.strip()]
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._handle_store),
            (evt.EVT_REJECTED, self._handle_rejected),
            (evt.EVT_ABORTED, self._handle_aborted),
        ]
        try:
            self._server = ae.start_server(
                (self.config.host, self.config.port),
                block=False,
                evt_handlers=handlers,
                ssl_context=self.config.ssl_context,
            )
        except OSError as exc:
            raise ListenerError(
                f"cannot listen on {self.config.host}:{self.config.port}: {exc.strerror or exc}"
            ) from exc
        self._stop.clear()
        self._ticker = threading.Thread(target=self._tick, name="pacs-quiet-period", daemon=True)
        self._ticker.start()
        log.info("listening as %s on %s:%d", self.config.ae_title, self.config.host, self.port)

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._ticker is not None:
            self._ticker.join(timeout=5)
            self._ticker = None
        self._flush_studies(force=True)

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        """The port actually bound (differs from the config when it asked for 0)."""
        if self._server is None:
            return self.config.port
        return int(self._server.server_address[1])

    # --- handlers (pynetdicom's association threads) --------------------------------------
    def _handle_store(self, event) -> int:  # event: pynetdicom.events.Event
        calling = event.assoc.requestor.ae_title
        try:
            dataset = event.dataset
            dataset.file_meta = event.file_meta
            study, sop = check_received(dataset, str(event.request.AffectedSOPInstanceUID))
        except ValueError as exc:
            return self._refuse(IDENTITY_REFUSED, str(exc), calling)
        except Exception as exc:  # noqa: BLE001 - any decoding failure of untrusted bytes is a refusal, never a crash
            return self._refuse(CANNOT_UNDERSTAND, f"dataset cannot be decoded ({type(exc).__name__})", calling)
        try:
            path = self.inbox.write(study, sop, event.encoded_dataset(include_meta=True))
        except ValueError as exc:
            return self._refuse(IDENTITY_REFUSED, str(exc), calling)
        except OSError as exc:
            return self._refuse(OUT_OF_RESOURCES, f"cannot write into the inbox ({exc.strerror or exc})", calling)
        with self._lock:
            entry = self._studies.setdefault(study, _Study(last=time.monotonic()))
            entry.last = time.monotonic()
            entry.count += 1
            count = entry.count
            self.stored += 1
        self._emit(ListenerEvent("stored", study_uid=study, path=path, count=count, calling_ae=calling))
        return SUCCESS

    def _refuse(self, status: int, reason: str, calling: str) -> int:
        with self._lock:
            self.refused += 1
        log.warning("refused a C-STORE from %s: %s (status 0x%04X)", calling, reason, status)
        self._emit(ListenerEvent("refused", reason=reason, calling_ae=calling))
        return status

    def _handle_rejected(self, event) -> None:
        calling = event.assoc.requestor.ae_title
        log.warning("rejected an association from %s (not allowed, or too many associations)", calling)
        self._emit(ListenerEvent("rejected", reason="association rejected", calling_ae=calling))

    def _handle_aborted(self, event) -> None:
        log.warning(
            "association from %s aborted (protocol error, invalid message, or the caller gave up)",
            event.assoc.requestor.ae_title,
        )

    # --- quiet period --------------------------------------------------------------------
    def _tick(self) -> None:
        step = min(0.5, self.config.quiet_seconds / 4)
        while not self._stop.wait(step):
            self._flush_studies(force=False)

    def _flush_studies(self, *, force: bool) -> None:
        now = time.monotonic()
        with self._lock:
            done = [(uid, s) for uid, s in self._studies.items() if force or now - s.last >= self.config.quiet_seconds]
            for uid, _ in done:
                del self._studies[uid]
        for uid, study in done:
            self._emit(ListenerEvent("study-complete", study_uid=uid, path=self.inbox.root / uid, count=study.count))

    def _emit(self, event: ListenerEvent) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:  # a listener callback must never take the SCP down
            log.exception("event handler failed for a %s event", event.kind)
