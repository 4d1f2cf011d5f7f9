"""Errors that carry data (path, tag, reason), turned into dialogs or CLI messages at the edge.

Every error PneumoView raises on purpose is a :class:`PneumoViewError`. Each one has a
human-readable ``reason`` and, where it applies, the ``path`` of the file and the DICOM
``tag`` involved, so the UI and the CLI can show one clear line without parsing text.
"""

from __future__ import annotations

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


class CalibrationError(PneumoViewError):
    """Scores and labels cannot give an operating point (one class only, non-finite score, bad target)."""


class AuditChainError(StoreError):
    """The hash-chained audit log was edited or shortened; ``entry_id`` is the first bad entry."""

    def __init__(self, reason: str, *, entry_id: int | None = None, path: str | PathLike[str] | None = None) -> None:
        self.entry_id = entry_id
        super().__init__(reason, path=path)
