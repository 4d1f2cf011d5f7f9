"""Training data: find labelled images, check them, and turn them into model crops (cached).

Two ways in (issue 5, "Data"):

* a folder with one sub-folder per class (``normal/``, ``pneumoconiosis/``; aliases such as
  ``abnormal/``, ``healthy/`` are accepted), DICOM / PNG / JPEG inside, nested folders allowed;
* a CSV with columns ``path,label,patient_id`` (more columns allowed; ``file`` is accepted for
  ``path``; paths are relative to the CSV's folder).

Patient IDs come from the CSV, else from the DICOM header (PatientID (0010,0020)); a PNG/JPEG
without one is its own patient (the summary says how many).

Every image goes through exactly the inference preprocessing (``pneumoview.imageio.load_grey``
-> ``pneumoview.preprocess.prepare_grey``: the same lung localiser, crop and size). The
resulting crop is cached on disk, keyed by the SHA-256 of the file's bytes and the
preprocessing parameters and code fingerprint, so a rerun never decodes the image again.

:func:`validate` builds the :class:`DataSummary` shown before anything trains: counts per class
and per patient, unreadable files with reasons, exact duplicates (same pixels), patients under
both labels, images flagged as not a frontal chest, and refusals (empty class, too few patients
for the folds).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from pneumoview.atomic import atomic_open, atomic_write_text
from pneumoview.hashing import file_sha256
from pneumoview.errors import (
    CancelledError,
    DicomReadError,
    PixelDecodeError,
    TrainingDataError,
    UnsupportedImageError,
)

#: Errors that make one file unusable (listed as unreadable); any other error stops validation
#: (e.g. missing localiser weights is not a data problem).
FILE_ERRORS = (DicomReadError, PixelDecodeError, UnsupportedImageError, TrainingDataError)

CLASS_NAMES: tuple[str, str] = ("pneumoconiosis", "normal")  # index 0 = positive ("Sick")

#: Label texts (folder names or CSV values, case-insensitive) -> class index.
LABEL_ALIASES: dict[str, int] = {
    **{k: 0 for k in ("pneumoconiosis", "sick", "abnormal", "positive", "disease", "diseased", "pneumonia", "1", "yes", "true")},
    **{k: 1 for k in ("normal", "healthy", "health", "negative", "0", "no", "false")},
}

RASTER_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic"})
SKIPPED_NAMES = frozenset({"dicomdir", "readme", "readme.md", "readme.txt", "license", "thumbs.db", ".ds_store"})

#: Problem kinds in the summary.
UNREADABLE = "unreadable"
DUPLICATE = "duplicate"
NOT_FRONTAL = "not-frontal-chest"
UNLABELLED = "unlabelled"
NO_LUNGS = "lungs-not-found"

#: Bump when the cached entry format changes.
CACHE_FORMAT = 1


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
    kind: str  # UNREADABLE, DUPLICATE, NOT_FRONTAL, UNLABELLED, NO_LUNGS
    reason: str


def _is_dicom_file(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    if path.suffix.lower() in RASTER_SUFFIXES:
        return False
    try:
        with path.open("rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def _walk_files(folder: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith(".") or name.lower() in SKIPPED_NAMES:
                continue
            files.append(Path(root) / name)
    return files


def _dicom_patient_id(path: Path) -> str:
    """PatientID (0010,0020) from the header, '' where absent or unreadable."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"], force=True)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:  # unreadable: reported later by decoding
        del exc
        return ""
    return str(getattr(ds, "PatientID", "") or "").strip()


def _patient_for(path: Path, given: str, root: Path) -> tuple[str, str]:
    if given.strip():
        return given.strip(), "csv"
    if _is_dicom_file(path):
        pid = _dicom_patient_id(path)
        if pid:
            return pid, "dicom"
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = path
    return f"file:{rel.as_posix()}", "file"


def discover(source: str | os.PathLike[str]) -> tuple[list[Sample], list[DataProblem]]:
    """Labelled samples of a class-per-folder tree or a CSV, plus files that could not be labelled.

    Raises ``TrainingDataError`` when ``source`` is neither, or when nothing labelled is found.
    """
    source = Path(source)
    if source.is_file() and source.suffix.lower() in {".csv", ".tsv", ".txt"}:
        samples, problems = _discover_csv(source)
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
    for child in sorted(root.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_file():
            if child.name.lower() not in SKIPPED_NAMES:
                problems.append(DataProblem(child, UNLABELLED, "file outside a class folder"))
            continue
        label = parse_label(child.name)
        if label is None:
            problems.append(
                DataProblem(child, UNLABELLED, f"folder name {child.name!r} is not a class (use 'normal' or 'pneumoconiosis')")
            )
            continue
        for path in _walk_files(child):
            pid, how = _patient_for(path, "", root)
            samples.append(Sample(path, label, pid, how))
    return samples, problems


def _discover_csv(csv_path: Path) -> tuple[list[Sample], list[DataProblem]]:
    base = csv_path.parent
    samples: list[Sample] = []
    problems: list[DataProblem] = []
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        sample_text = fh.read(4096)
        fh.seek(0)
        dialect = csv.Sniffer().sniff(sample_text, delimiters=",;\t") if sample_text else csv.excel
        reader = csv.DictReader(fh, dialect=dialect)
        columns = {c.strip().lower(): c for c in (reader.fieldnames or [])}
        path_col = columns.get("path") or columns.get("file") or columns.get("filename")
        label_col = columns.get("label") or columns.get("class")
        pid_col = columns.get("patient_id") or columns.get("patientid") or columns.get("patient")
        if path_col is None or label_col is None:
            raise TrainingDataError(
                f"CSV needs columns 'path' and 'label' (found: {', '.join(reader.fieldnames or []) or 'none'})",
                path=csv_path,
            )
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
            pid, how = _patient_for(path, (row.get(pid_col) or "") if pid_col else "", base)
            samples.append(Sample(path, label, pid, how))
    return samples, problems


# ---------------------------------------------------------------------------------------------
# Preprocessing + on-disk crop cache


def default_cache_dir() -> Path:
    """``$PNEUMOVIEW_HOME/cache/crops`` or the platformdirs user cache folder ``.../crops``."""
    from platformdirs import user_cache_dir

    from pneumoview.paths import APP_NAME, home_override

    home = home_override()
    return (home / "cache" if home else Path(user_cache_dir(APP_NAME, appauthor=False))) / "crops"


@lru_cache(maxsize=1)
def pipeline_fingerprint() -> str:
    """SHA-256 over the code and weights of the preprocessing path (imageio, preprocess, lungs).

    Any change to how a crop is made invalidates the cache: stale crops can never be reused.
    """
    import importlib

    digest = hashlib.sha256()
    for name in ("pneumoview.imageio", "pneumoview.preprocess", "pneumoview.dicom.lungs", "pneumoview.dicom.display"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            digest.update(f"{name}:absent".encode())
            continue
        file = getattr(module, "__file__", None)
        if file:
            digest.update(Path(file).read_bytes())
    lung_dir = Path(importlib.import_module("pneumoview.dicom.lungs").__file__).parent / "lung_model"
    if lung_dir.is_dir():
        for weights in sorted(lung_dir.glob("*.npz")):
            digest.update(weights.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class PreparedImage:
    """A model crop and what was learnt while making it (cached together)."""

    crop_path: Path  # .npy float32 [size, size] in [0, 1]
    content_sha256: str  # of the file's bytes
    pixel_sha256: str  # of the decoded grey pixels (exact-duplicate detection)
    lungs_found: bool  # False = the localiser fell back to the whole image
    suitability_code: str | None  # DICOM suitability code when not diagnosable (e.g. "lateral-view")
    suitability_reason: str
    notes: tuple[str, ...] = ()

    def load_crop(self) -> np.ndarray:
        return np.load(self.crop_path, allow_pickle=False)


class CropCache:
    """On-disk cache of model crops: ``<dir>/<key[:2]>/<key>.npy`` + ``<key>.json``, written atomically.

    ``key`` = SHA-256 of (file content hash, size, margin, pipeline fingerprint, format).
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None, *, size: int = 224, margin: float | None = None):
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.size = int(size)
        self.margin = margin
        self.hits = 0
        self.misses = 0

    def key(self, content_sha256: str) -> str:
        params = json.dumps(
            {"content": content_sha256, "size": self.size, "margin": self.margin, "pipeline": pipeline_fingerprint(), "format": CACHE_FORMAT},
            sort_keys=True,
        )
        return hashlib.sha256(params.encode()).hexdigest()

    def _paths(self, key: str) -> tuple[Path, Path]:
        folder = self.directory / key[:2]
        return folder / f"{key}.npy", folder / f"{key}.json"

    def prepare(self, path: str | os.PathLike[str]) -> PreparedImage:
        """The crop of ``path`` (from the cache, else decoded, localised, cropped and stored).

        Raises the ``PneumoViewError`` of the decoder for unreadable files.
        """
        path = Path(path)
        try:
            content = file_sha256(path)
        except OSError as exc:
            raise TrainingDataError(f"cannot read file: {exc.strerror or exc}", path=path) from exc
        key = self.key(content)
        npy, meta_path = self._paths(key)
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
                if "error" in meta:  # this exact content failed before with this pipeline
                    self.hits += 1
                    raise TrainingDataError(meta["error"], path=path)
                if npy.is_file():
                    prepared = _prepared_from_meta(npy, meta)
                    self.hits += 1
                    return prepared
            except (OSError, ValueError, KeyError):
                pass  # a damaged entry is simply rebuilt below
        self.misses += 1
        try:
            crop, meta = _make_crop(path, size=self.size, margin=self.margin)
        except FILE_ERRORS as exc:
            meta_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(meta_path, json.dumps({"error": exc.reason, "error_type": type(exc).__name__}))
            raise
        meta["content_sha256"] = content
        npy.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(npy, "wb") as fh:
            np.save(fh, crop.astype(np.float32, copy=False), allow_pickle=False)
        atomic_write_text(meta_path, json.dumps(meta, sort_keys=True))
        return _prepared_from_meta(npy, meta)


def _prepared_from_meta(npy: Path, meta: dict[str, Any]) -> PreparedImage:
    return PreparedImage(
        crop_path=npy,
        content_sha256=meta["content_sha256"],
        pixel_sha256=meta["pixel_sha256"],
        lungs_found=bool(meta["lungs_found"]),
        suitability_code=meta.get("suitability_code"),
        suitability_reason=meta.get("suitability_reason", ""),
        notes=tuple(meta.get("notes", ())),
    )


def _make_crop(path: Path, *, size: int, margin: float | None) -> tuple[np.ndarray, dict[str, Any]]:
    """Inference preprocessing of one file (``load_grey`` -> ``prepare_grey``) + DICOM suitability."""
    from pneumoview.imageio import load_grey
    from pneumoview.preprocess import prepare_grey

    grey = load_grey(path)
    pixels = np.ascontiguousarray(grey.pixels, dtype=np.float32)
    pixel_hash = hashlib.sha256(f"{pixels.shape}".encode() + pixels.tobytes()).hexdigest()
    model_input = prepare_grey(grey, size=size, margin=margin)
    code, reason = None, ""
    if grey.is_dicom:
        code, reason = _dicom_suitability(path)
    meta = {
        "pixel_sha256": pixel_hash,
        "lungs_found": not bool(model_input.box.fallback),
        "box": [int(model_input.box.x0), int(model_input.box.y0), int(model_input.box.x1), int(model_input.box.y1)],
        "suitability_code": code,
        "suitability_reason": reason,
        "notes": list(grey.notes) + list(model_input.notes),
    }
    return np.asarray(model_input.crop, dtype=np.float32), meta


def _dicom_suitability(path: Path) -> tuple[str | None, str]:
    """``(code, reason)`` of ``pneumoview.dicom.suitability.assess`` when not diagnosable, else ``(None, "")``."""
    from pneumoview.dicom.scan import read_record
    from pneumoview.dicom.suitability import assess

    verdict = assess(read_record(path))
    if verdict.diagnosable:
        return None, ""
    return verdict.code or "unsuitable", verdict.reason


# ---------------------------------------------------------------------------------------------
# Validation summary


@dataclass
class DataSummary:
    """What the user sees before training; JSON-able via :meth:`to_dict`."""

    source: str
    n_files: int
    n_used: int
    class_names: tuple[str, ...]
    images_per_class: list[int]
    patients_per_class: list[int]
    n_patients: int
    images_per_patient: dict[str, float]  # min / median / max
    patients_without_id: int
    unreadable: list[dict[str, str]] = field(default_factory=list)
    unlabelled: list[dict[str, str]] = field(default_factory=list)
    duplicates: list[list[str]] = field(default_factory=list)  # groups of paths with identical pixels; first kept
    mixed_patients: list[str] = field(default_factory=list)
    not_frontal: list[dict[str, str]] = field(default_factory=list)
    lungs_not_found: list[str] = field(default_factory=list)
    file_list_sha256: str = ""
    cache_hits: int = 0
    cache_misses: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["class_names"] = list(self.class_names)
        out["ok"] = self.ok
        return out

    def format_text(self) -> str:
        lines = [f"Data: {self.source}"]
        for name, n_img, n_pat in zip(self.class_names, self.images_per_class, self.patients_per_class, strict=True):
            lines.append(f"  {name:15s} {n_img:6d} images  {n_pat:6d} patients")
        ipp = self.images_per_patient
        lines.append(
            f"  {self.n_used} of {self.n_files} files used; {self.n_patients} patients "
            f"(images per patient: min {ipp.get('min', 0):g}, median {ipp.get('median', 0):g}, max {ipp.get('max', 0):g})"
        )
        for title, items in (
            ("unreadable", [f"{p['path']}: {p['reason']}" for p in self.unreadable]),
            ("unlabelled", [f"{p['path']}: {p['reason']}" for p in self.unlabelled]),
            ("exact duplicates (first kept)", [" = ".join(g) for g in self.duplicates]),
            ("patients under both labels", self.mixed_patients),
            ("not a frontal chest (excluded)", [f"{p['path']}: {p['reason']}" for p in self.not_frontal]),
            ("lungs not found (whole image used)", self.lungs_not_found),
        ):
            if items:
                lines.append(f"  {title}: {len(items)}")
                lines.extend(f"    {item}" for item in items[:10])
                if len(items) > 10:
                    lines.append(f"    ... and {len(items) - 10} more")
        lines.extend(f"  warning: {w}" for w in self.warnings)
        lines.extend(f"  REFUSED: {e}" for e in self.errors)
        return "\n".join(lines)


@dataclass
class PreparedDataset:
    """The samples that train, with their cached crops (loaded lazily, so RAM stays small)."""

    samples: list[Sample]
    images: list[PreparedImage]
    summary: DataSummary

    @property
    def labels(self) -> list[int]:
        return [s.label for s in self.samples]

    @property
    def patients(self) -> list[str]:
        return [s.patient_id for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)


def file_list_hash(samples: Iterable[Sample], images: Iterable[PreparedImage]) -> str:
    """SHA-256 over sorted ``content-hash, label, patient`` lines: the data's identity, path-independent."""
    lines = sorted(f"{img.content_sha256}\t{s.label}\t{s.patient_id}" for s, img in zip(samples, images, strict=True))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def validate(
    source: str | os.PathLike[str],
    *,
    folds: int = 5,
    cache: CropCache | None = None,
    include_flagged: bool = False,
    min_patients_per_class: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> PreparedDataset:
    """Discover, decode (or reuse cached crops) and check the data; never raises for bad data.

    Refusals go into ``summary.errors`` (call :func:`require_ok` to raise them). Unreadable files,
    exact duplicates after the first and, unless ``include_flagged``, images that the DICOM
    suitability check flags as not a frontal chest are left out of the returned samples.
    """
    cache = cache or CropCache()
    samples, problems = discover(source)
    n_files = len(samples) + sum(1 for p in problems if p.kind == UNLABELLED and Path(p.path).is_file())
    kept: list[Sample] = []
    images: list[PreparedImage] = []
    unreadable: list[dict[str, str]] = []
    not_frontal: list[dict[str, str]] = []
    lungs_not_found: list[str] = []
    by_pixels: dict[str, list[str]] = defaultdict(list)
    for i, sample in enumerate(samples):
        if cancel is not None and cancel():
            raise CancelledError("data validation cancelled")
        try:
            prepared = cache.prepare(sample.path)
        except FILE_ERRORS as exc:
            unreadable.append({"path": str(sample.path), "reason": exc.reason})
            prepared = None
        if progress is not None:
            progress(i + 1, len(samples))
        if prepared is None:
            continue
        by_pixels[prepared.pixel_sha256].append(str(sample.path))
        if len(by_pixels[prepared.pixel_sha256]) > 1:
            continue  # exact duplicate: the first copy trains, the others are listed
        if prepared.suitability_code is not None:
            not_frontal.append({"path": str(sample.path), "code": prepared.suitability_code, "reason": prepared.suitability_reason})
            if not include_flagged:
                continue
        if not prepared.lungs_found:
            lungs_not_found.append(str(sample.path))
        kept.append(sample)
        images.append(prepared)

    summary = _summarise(
        str(source), n_files, kept, images, folds=folds, min_patients_per_class=min_patients_per_class
    )
    summary.unreadable = unreadable
    summary.unlabelled = [{"path": str(p.path), "reason": p.reason} for p in problems if p.kind == UNLABELLED]
    summary.duplicates = [paths for paths in by_pixels.values() if len(paths) > 1]
    summary.not_frontal = not_frontal
    summary.lungs_not_found = lungs_not_found
    summary.cache_hits, summary.cache_misses = cache.hits, cache.misses
    if summary.duplicates:
        cross = [g for g in summary.duplicates if len({_label_of(samples, p) for p in g}) > 1]
        if cross:
            summary.warnings.append(f"{len(cross)} duplicate group(s) carry both labels: check the labels")
    if unreadable:
        summary.warnings.append(f"{len(unreadable)} file(s) could not be read and are left out")
    return PreparedDataset(kept, images, summary)


def _label_of(samples: Sequence[Sample], path: str) -> int:
    return next(s.label for s in samples if str(s.path) == path)


def _summarise(
    source: str,
    n_files: int,
    samples: Sequence[Sample],
    images: Sequence[PreparedImage],
    *,
    folds: int,
    min_patients_per_class: int | None,
) -> DataSummary:
    n_classes = len(CLASS_NAMES)
    per_patient: dict[str, set[int]] = defaultdict(set)
    images_of_patient: dict[str, int] = defaultdict(int)
    for s in samples:
        per_patient[s.patient_id].add(s.label)
        images_of_patient[s.patient_id] += 1
    images_per_class = [sum(1 for s in samples if s.label == c) for c in range(n_classes)]
    patients_per_class = [sum(1 for labels in per_patient.values() if c in labels) for c in range(n_classes)]
    counts = sorted(images_of_patient.values())
    ipp = {"min": counts[0], "median": float(statistics.median(counts)), "max": counts[-1]} if counts else {}
    summary = DataSummary(
        source=source,
        n_files=n_files,
        n_used=len(samples),
        class_names=CLASS_NAMES,
        images_per_class=images_per_class,
        patients_per_class=patients_per_class,
        n_patients=len(per_patient),
        images_per_patient=ipp,
        patients_without_id=sum(1 for s in samples if s.patient_source == "file"),
        mixed_patients=sorted(p for p, labels in per_patient.items() if len(labels) > 1),
        file_list_sha256=file_list_hash(samples, images),
    )
    needed = max(folds, min_patients_per_class or 0, 2)
    for c, name in enumerate(CLASS_NAMES):
        if images_per_class[c] == 0:
            summary.errors.append(f"class '{name}' has no usable images")
        elif patients_per_class[c] < needed:
            summary.errors.append(
                f"class '{name}' has only {patients_per_class[c]} patient(s): at least {needed} are needed for {folds} folds"
            )
    if summary.patients_without_id:
        summary.warnings.append(
            f"{summary.patients_without_id} image(s) have no patient ID (no CSV column, no DICOM PatientID): "
            "each counts as its own patient, so a patient's images might be split across folds"
        )
    if summary.mixed_patients:
        summary.warnings.append(f"{len(summary.mixed_patients)} patient(s) appear under both labels")
    return summary


def require_ok(summary: DataSummary) -> None:
    """Raise ``TrainingDataError`` with every refusal of the summary."""
    if summary.errors:
        raise TrainingDataError("; ".join(summary.errors), path=summary.source)
