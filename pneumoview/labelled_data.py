"""Labelled radiographs (the training data format, also read by `pneumoview calibrate`): from a class-per-folder tree or a CSV.

Two ways in:

* a folder with one sub-folder per class (``normal/``, ``pneumoconiosis/``; aliases such as
  ``abnormal/``, ``healthy/`` are accepted), DICOM / PNG / JPEG inside, nested folders allowed;
* a CSV with columns ``path,label,patient_id`` (more columns allowed; ``file`` is accepted for
  ``path``; paths are relative to the CSV's folder and must stay inside it unless
  ``allow_outside``). The CSV must be UTF-8 text (a BOM is accepted).

Patient IDs come from the CSV, else from the DICOM header (PatientID (0010,0020), read through
``pneumoview.dicom.scan.read_record``, the bounded header reader); a PNG/JPEG without one is its
own patient (the summary says how many).

Per-file problems (not a regular file, outside the CSV's folder, unknown label, a path listed
twice with different labels) are returned as :class:`DataProblem`; only a source that cannot be
read at all raises ``TrainingDataError``.
"""

from __future__ import annotations

import csv
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from pneumoview.dicom.files import walk_files
from pneumoview.errors import DicomReadError, TrainingDataError
from pneumoview.imageio import is_dicom_file

CLASS_NAMES: tuple[str, str] = ("pneumoconiosis", "normal")  # index 0 = positive ("Sick")

#: Label texts (folder names or CSV values, case-insensitive) -> class index.
LABEL_ALIASES: dict[str, int] = {
    **{
        k: 0
        for k in (
            "pneumoconiosis",
            "sick",
            "abnormal",
            "positive",
            "disease",
            "diseased",
            "pneumonia",
            "1",
            "yes",
            "true",
        )
    },
    **{k: 1 for k in ("normal", "healthy", "health", "negative", "0", "no", "false")},
}

RASTER_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
#: Documentation beside the images in a data folder: not images, not problems (hidden names and OS clutter are
#: the walker's rule, :mod:`pneumoview.dicom.files`).
SKIPPED_NAMES = frozenset({"dicomdir", "readme", "readme.md", "readme.txt", "license"})
CSV_SUFFIXES = frozenset({".csv", ".tsv", ".txt"})

#: Problem kinds in the summary.
UNREADABLE = "unreadable"
DUPLICATE = "duplicate"
NOT_FRONTAL = "not-frontal-chest"
UNLABELLED = "unlabelled"
NO_LUNGS = "lungs-not-found"
NOT_REGULAR = "not-a-regular-file"
OUTSIDE = "outside-data-folder"
CONFLICT = "conflicting-labels"  # the same file listed with two labels: a data-check error

#: Longest CSV accepted (a training list of a few hundred thousand rows fits easily).
MAX_CSV_BYTES = 64 * 1024 * 1024


def parse_label(text: str) -> int | None:
    """Class index for a label text (``"Normal"`` -> 1, ``"abnormal"`` -> 0), None if unknown."""
    return LABEL_ALIASES.get(text.strip().lower())


@dataclass(frozen=True)
class Sample:
    """One labelled image; ``label`` is the class index (0 = pneumoconiosis)."""

    path: Path
    label: int
    patient_id: str
    patient_source: str  # "csv", "dicom" or "file" (no ID known: the image is its own patient)


@dataclass(frozen=True)
class DataProblem:
    path: Path
    kind: str  # UNREADABLE, DUPLICATE, NOT_FRONTAL, UNLABELLED, NO_LUNGS, NOT_REGULAR, OUTSIDE, CONFLICT
    reason: str


def _walk_files(folder: Path) -> list[Path]:
    """Files under ``folder`` by the one walker rule (:func:`pneumoview.dicom.files.walk_files`),
    less the documentation files that may sit beside the images (:data:`SKIPPED_NAMES`)."""
    return [path for path in walk_files([folder]) if path.name.lower() not in SKIPPED_NAMES]


def _dicom_patient_id(path: Path) -> str:
    """PatientID (0010,0020) from the header, '' where absent or unreadable (decoding reports it later)."""
    from pneumoview.dicom.scan import read_record

    try:
        return (read_record(path).patient_id or "").strip()
    except DicomReadError:
        return ""


def _patient_for(path: Path, given: str, root: Path) -> tuple[str, str]:
    if given.strip():
        return given.strip(), "csv"
    if path.suffix.lower() not in RASTER_SUFFIXES and is_dicom_file(path):
        pid = _dicom_patient_id(path)
        if pid:
            return pid, "dicom"
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = path
    return f"file:{rel.as_posix()}", "file"


def _regular_file_problem(path: Path) -> DataProblem | None:
    """A problem when ``path`` is not a regular file (FIFO, device, socket, folder, missing), else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return DataProblem(path, UNREADABLE, f"cannot read file: {exc.strerror or exc}")
    if not stat.S_ISREG(mode):
        return DataProblem(path, NOT_REGULAR, "not a regular file (folder, FIFO, device or socket)")
    return None


def discover(source: str | os.PathLike[str], *, allow_outside: bool = False) -> tuple[list[Sample], list[DataProblem]]:
    """Labelled samples of a class-per-folder tree or a CSV, plus files that cannot be used.

    Raises ``TrainingDataError`` when ``source`` is neither, cannot be read, or holds nothing labelled.
    """
    source = Path(source)
    if source.is_file() and source.suffix.lower() in CSV_SUFFIXES:
        samples, problems = _discover_csv(source, allow_outside=allow_outside)
    elif source.is_dir():
        samples, problems = _discover_folder(source)
    else:
        raise TrainingDataError("training data must be a folder with one sub-folder per class, or a CSV", path=source)
    if not samples:
        raise TrainingDataError(
            "no labelled images found (expected sub-folders 'normal/' and 'pneumoconiosis/', "
            "or a CSV with columns path,label,patient_id)",
            path=source,
        )
    return samples, problems


def _discover_folder(root: Path) -> tuple[list[Sample], list[DataProblem]]:
    samples: list[Sample] = []
    problems: list[DataProblem] = []
    try:
        children = sorted(root.iterdir())
    except OSError as exc:
        raise TrainingDataError(f"cannot list the data folder: {exc.strerror or exc}", path=root) from exc
    for child in children:
        if child.name.startswith("."):
            continue
        if not child.is_dir():
            if child.name.lower() not in SKIPPED_NAMES:
                problems.append(DataProblem(child, UNLABELLED, "file outside a class folder"))
            continue
        label = parse_label(child.name)
        if label is None:
            problems.append(
                DataProblem(
                    child, UNLABELLED, f"folder name {child.name!r} is not a class (use 'normal' or 'pneumoconiosis')"
                )
            )
            continue
        for path in _walk_files(child):
            problem = _regular_file_problem(path)
            if problem is not None:
                problems.append(problem)
                continue
            pid, how = _patient_for(path, "", root)
            samples.append(Sample(path, label, pid, how))
    return samples, problems


def read_csv_text(csv_path: Path) -> str:
    """The CSV's text (UTF-8, BOM accepted); ``TrainingDataError`` for binary, non-UTF-8 or huge files."""
    problem = _regular_file_problem(csv_path)
    if problem is not None:
        raise TrainingDataError(problem.reason, path=csv_path)
    try:
        with csv_path.open("rb") as fh:
            raw = fh.read(MAX_CSV_BYTES + 1)
    except OSError as exc:
        raise TrainingDataError(f"cannot read the CSV: {exc.strerror or exc}", path=csv_path) from exc
    if len(raw) > MAX_CSV_BYTES:
        raise TrainingDataError(f"the CSV is larger than {MAX_CSV_BYTES // (1024 * 1024)} MB", path=csv_path)
    if b"\x00" in raw:
        raise TrainingDataError("the CSV is not a text file (it contains NUL bytes)", path=csv_path)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TrainingDataError(
            f"the CSV is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); save it as UTF-8",
            path=csv_path,
        ) from exc


def _csv_dialect(text: str) -> type[csv.Dialect] | csv.Dialect:
    """The sniffed dialect of the first 4 KiB, or plain comma-separated when it cannot be told (one column)."""
    try:
        return csv.Sniffer().sniff(text[:4096], delimiters=",;\t") if text.strip() else csv.excel
    except csv.Error:
        return csv.excel


def _confined(path: Path, base: Path, allow_outside: bool) -> DataProblem | None:
    if allow_outside:
        return None
    try:
        path.resolve().relative_to(base.resolve())
    except ValueError:
        return DataProblem(path, OUTSIDE, "outside the CSV's folder (give --allow-outside to use it)")
    except (OSError, RuntimeError) as exc:  # symlink loop
        return DataProblem(path, UNREADABLE, f"cannot resolve the path: {exc}")
    return None


def _discover_csv(csv_path: Path, *, allow_outside: bool) -> tuple[list[Sample], list[DataProblem]]:
    base = csv_path.parent
    text = read_csv_text(csv_path)
    reader = csv.DictReader(io.StringIO(text, newline=""), dialect=_csv_dialect(text))
    try:
        fieldnames = reader.fieldnames or []
    except csv.Error as exc:
        raise TrainingDataError(f"the CSV cannot be parsed: {exc}", path=csv_path) from exc
    columns = {c.strip().lower(): c for c in fieldnames if c is not None}
    path_col = columns.get("path") or columns.get("file") or columns.get("filename")
    label_col = columns.get("label") or columns.get("class")
    pid_col = columns.get("patient_id") or columns.get("patientid") or columns.get("patient")
    if path_col is None or label_col is None:
        raise TrainingDataError(
            f"CSV needs columns 'path' and 'label' (found: {', '.join(fieldnames) or 'none'})", path=csv_path
        )
    samples: dict[Path, Sample] = {}
    problems: list[DataProblem] = []
    conflicts: set[Path] = set()
    line_no = 1
    try:
        for line_no, row in enumerate(reader, start=2):
            raw_path = (row.get(path_col) or "").strip()
            if not raw_path:
                continue
            path = Path(raw_path)
            if not path.is_absolute():
                path = base / path
            label = parse_label(row.get(label_col) or "")
            if label is None:
                problems.append(DataProblem(path, UNLABELLED, f"line {line_no}: unknown label {row.get(label_col)!r}"))
                continue
            problem = _confined(path, base, allow_outside) or _regular_file_problem(path)
            if problem is not None:
                problems.append(DataProblem(problem.path, problem.kind, f"line {line_no}: {problem.reason}"))
                continue
            key = path.resolve()
            earlier = samples.get(key)
            if earlier is not None:
                if earlier.label != label:
                    conflicts.add(key)
                continue  # the same file with the same label twice trains once
            pid, how = _patient_for(path, (row.get(pid_col) or "") if pid_col else "", base)
            samples[key] = Sample(path, label, pid, how)
    except csv.Error as exc:
        raise TrainingDataError(f"the CSV cannot be parsed at line {line_no + 1}: {exc}", path=csv_path) from exc
    for key in sorted(conflicts):
        problems.append(DataProblem(samples.pop(key).path, CONFLICT, "listed more than once with different labels"))
    return list(samples.values()), problems
