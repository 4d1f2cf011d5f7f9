"""Write the DICOM result objects (TID 1500 SR + lung-crop Secondary Capture) of one analysed image.

:func:`write_dicom_results` takes the source file and plain values (:class:`~pneumoview.pacs.sr.ModelResult`),
so any caller (``pneumoview analyze --dicom-out``, the app) can use it whatever its result type.
Files are named by their own SOP Instance UID (``SR-<uid>.dcm``, ``SC-<uid>.dcm``), written
atomically (:mod:`pneumoview.atomic`); the same result written twice has the same UIDs and replaces
the earlier files.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from pneumoview.atomic import atomic_write_bytes
from pneumoview.errors import DicomReadError, ExportError
from pneumoview.pacs.sr import ModelResult, build_sr
from pneumoview.pacs.uids import is_valid_uid

#: Source header attributes the SR and SC copy or reference; without them nothing is written.
REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


def read_source_header(path: str | os.PathLike[str]) -> Dataset:
    """The source image's header (no pixel data read); DicomReadError where identity attributes are missing."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise DicomReadError(f"cannot read the source header: {type(exc).__name__}", path=path) from exc
    for keyword in REQUIRED:
        if not is_valid_uid(str(header.get(keyword, ""))):
            raise DicomReadError(f"the source has no valid {keyword}: no DICOM result can reference it", path=path)
    return header


def encode(dataset: Dataset) -> bytes:
    """``dataset`` as a DICOM Part 10 file (preamble, file meta, explicit VR little endian)."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_dicom_results(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    result: ModelResult,
    crop: np.ndarray | None = None,
    heatmap: np.ndarray | None = None,
) -> list[Path]:
    """Write the SR (always) and the SC (when ``crop`` is given) for ``source`` into ``out_dir``.

    Returns the paths written. Raises DicomReadError (source not DICOM / no identity), ValueError
    (non-finite values) or ExportError (cannot write).
    """
    header = read_source_header(source)
    objects = [("SR", build_sr(header, result))]
    if crop is not None:
        from pneumoview.pacs.sc import build_sc

        objects.append(("SC", build_sc(header, crop, result, heatmap)))
    folder = Path(out_dir)
    written: list[Path] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for kind, dataset in objects:
            target = folder / f"{kind}-{dataset.SOPInstanceUID}.dcm"
            atomic_write_bytes(target, encode(dataset))
            written.append(target)
    except OSError as exc:
        raise ExportError(f"cannot write DICOM results: {exc.strerror or exc}", path=folder) from exc
    return written


def write_result_files(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    probability: float,
    threshold: float,
    label: str,
    class_names: tuple[str, ...] | list[str] = ("pneumoconiosis", "normal"),
    model_name: str = "",
    model_version: str = "",
    bundle_fingerprint: str = "",
    demo: bool = False,
    crop: np.ndarray | None = None,
    heatmap: np.ndarray | None = None,
) -> tuple[list[Path], str]:
    """:func:`write_dicom_results` from plain values, for callers with their own result type.

    Returns ``(paths written, "")``, or ``([], reason)`` when this source cannot get DICOM results
    (not DICOM, no identity, non-finite values); an unwritable folder still raises ExportError.
    """
    result = ModelResult(
        probability=float(probability),
        threshold=float(threshold),
        label=label,
        class_names=tuple(class_names),
        model_name=model_name,
        model_version=model_version,
        bundle_fingerprint=bundle_fingerprint,
        demo=demo,
    )
    return write_model_result(source, out_dir, result, crop=crop, heatmap=heatmap)


def write_model_result(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    result: ModelResult,
    *,
    crop: np.ndarray | None = None,
    heatmap: np.ndarray | None = None,
) -> tuple[list[Path], str]:
    """:func:`write_dicom_results`, with the reason instead of an exception when ``source`` cannot get them.

    Returns ``(paths written, "")``, or ``([], reason)`` when this source cannot get DICOM results
    (not DICOM, no identity, non-finite values); an unwritable folder still raises ExportError.
    """
    try:
        return write_dicom_results(source, out_dir, result, crop=crop, heatmap=heatmap), ""
    except DicomReadError as exc:
        return [], f"no DICOM result: {exc.reason}"
    except ValueError as exc:
        return [], f"no DICOM result: {exc}"


def write_decision_file(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    decision: str,
    result: ModelResult,
    reviewer: str = "",
) -> Path:
    """The reader's decision SR (:func:`~pneumoview.pacs.sr.build_decision_sr`) written as ``DR-<uid>.dcm``."""
    from pneumoview.pacs.sr import build_decision_sr

    dataset = build_decision_sr(read_source_header(source), decision, result, reviewer)
    folder = Path(out_dir)
    target = folder / f"DR-{dataset.SOPInstanceUID}.dcm"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, encode(dataset))
    except OSError as exc:
        raise ExportError(f"cannot write DICOM results: {exc.strerror or exc}", path=folder) from exc
    return target
