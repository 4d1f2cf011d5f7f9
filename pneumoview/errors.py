"""Errors that carry data (path, tag, reason), turned into dialogs or CLI messages at the edge.

Every error PneumoView raises on purpose is a :class:`PneumoViewError`. Each one has a
human-readable ``reason`` and, where it applies, the ``path`` of the file and the DICOM
``tag`` involved, so the UI and the CLI can show one clear line without parsing text.
"""

from __future__ import annotations

import errno
from os import PathLike
from pathlib import Path


class PneumoViewError(Exception):
    """Base class: ``reason`` (always), ``path`` and ``tag`` (where they apply)."""

    def __init__(
        self,
        reason: str,
        *,
        path: str | PathLike[str] | None = None,
        tag: str | None = None,
    ) -> None:
        self.reason = reason
        self.path = Path(path) if path is not None else None
        self.tag = tag
        super().__init__(self.message)

    @property
    def message(self) -> str:
        parts = []
        if self.path is not None:
            parts.append(str(self.path))
        if self.tag is not None:
            parts.append(f"tag {self.tag}")
        where = f" ({', '.join(parts)})" if parts else ""
        return f"{self.reason}{where}"


class DicomReadError(PneumoViewError):
    """A file could not be read or parsed as DICOM."""


class PixelDecodeError(PneumoViewError):
    """The header is readable but the pixel data cannot be decoded."""


class UnsupportedImageError(PneumoViewError):
    """The image is viewable but cannot be diagnosed; ``code`` is a stable reason code."""

    def __init__(self, code: str, reason: str, *, path: str | PathLike[str] | None = None) -> None:
        self.code = code
        super().__init__(reason, path=path)


class ConfigError(PneumoViewError):
    """An architecture or settings file is missing, malformed, or inconsistent."""


class WeightsError(PneumoViewError):
    """Base weights (CLIP, LLaMA) are missing, of the wrong form, or corrupt."""


class BundleError(PneumoViewError):
    """A model bundle is missing, malformed, or does not match its manifest."""


class FingerprintMismatchError(BundleError):
    """A bundle was trained on other base weights than the ones offered."""


class InsufficientMemoryError(PneumoViewError):
    """Not enough (GPU or host) memory for the requested plan."""


class CancelledError(PneumoViewError):
    """Long work was cancelled by the user."""


class StoreError(PneumoViewError):
    """The local results database cannot be opened, migrated, or written."""


class ExportError(PneumoViewError):
    """A CSV report could not be written."""


class TrainingDataError(PneumoViewError):
    """Training data are unusable (empty class, too few patients for the folds, ...)."""


class ReadingError(PneumoViewError):
    """A reading workflow step is refused (unknown reader, blinding, arbitration); ``field`` where it applies."""

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(reason)

    @property
    def message(self) -> str:
        base = super().message
        return f"{self.field}: {base}" if self.field else base


class ReadingValidationError(ReadingError):
    """An ILO reading is incomplete or an impossible combination; ``field`` names the form field."""


class NotRegularFileError(DicomReadError):
    """A path names a FIFO, device, socket or folder: never opened (it could block or never end)."""

    code = "not-a-regular-file"


class DecoderError(PixelDecodeError):
    """The sandboxed decoder (:mod:`pneumoview.dicom.sandbox`) failed on one file.

    ``code`` is ``decoder-crashed`` (the worker died, e.g. a codec aborted), ``decoder-timeout``
    (wall-clock limit), ``decoder-memory`` (memory limit) or ``decoder-error`` (an unexpected
    exception inside the decoder).
    """

    def __init__(self, code: str, reason: str, *, path: str | PathLike[str] | None = None) -> None:
        self.code = code
        super().__init__(f"{code}: {reason}", path=path)


class StorageError(PneumoViewError):
    """A file or folder at the edge (home, cache, output, registry) cannot be written: disk full, read-only,
    not a folder. ``message`` is one line: ``disk full: PATH`` or ``cannot write PATH: REASON``."""

    @property
    def message(self) -> str:
        where = str(self.path) if self.path is not None else "a file"
        if self.reason == "disk full":
            return f"disk full: {where}"
        return f"cannot write {where}: {self.reason}"


#: errno values that mean "no space left" (ENOSPC, EDQUOT, and EFBIG: a file-size limit of the file system).
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
#: How libraries that lose the errno (safetensors, shutil.copytree) say it.
_DISK_FULL_WORDS = ("No space left", "StorageFull", "Disk quota", "File too large")
#: A file system with less free space than this counts as full when an error does not say why.
_NEARLY_FULL_BYTES = 1 << 20


def _nearly_full(path: Path) -> bool:
    """True when the file system holding ``path`` (or its nearest existing parent) has < 1 MiB free."""
    import os

    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        stats = os.statvfs(probe)
    except (OSError, AttributeError):  # no statvfs on Windows
        return False
    return stats.f_bavail * stats.f_frsize < _NEARLY_FULL_BYTES


def storage_error(exc: BaseException, path: str | PathLike[str] | None = None) -> StorageError:
    """One clear :class:`StorageError` for an ``OSError`` (or a library error wrapping one) while writing.

    ``disk full`` for ENOSPC/EDQUOT (also when a library such as safetensors only says "No space
    left" / "StorageFull" in its text), otherwise the OS's reason. ``path`` defaults to the
    error's own file name.
    """
    errno_value = getattr(exc, "errno", None)
    text = str(exc)
    where = path if path is not None else getattr(exc, "filename", None)
    if errno_value in _DISK_FULL_ERRNOS or any(words in text for words in _DISK_FULL_WORDS):
        return StorageError("disk full", path=where)
    if errno_value is None and where is not None and _nearly_full(Path(where)):  # e.g. numpy's short write
        return StorageError("disk full", path=where)
    return StorageError(getattr(exc, "strerror", None) or text or type(exc).__name__, path=where)


class CalibrationError(PneumoViewError):
    """Scores and labels cannot give an operating point (one class only, non-finite score, bad target)."""


class AuditChainError(StoreError):
    """The hash-chained audit log was edited or shortened; ``entry_id`` is the first bad entry."""

    def __init__(self, reason: str, *, entry_id: int | None = None, path: str | PathLike[str] | None = None) -> None:
        self.entry_id = entry_id
        super().__init__(reason, path=path)


class PacsError(PneumoViewError):
    """A PACS could not be reached, refused us, or answered with a failure status."""
