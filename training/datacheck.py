"""The data check shown before anything trains: :func:`validate` -> :class:`DataSummary`.

It lists counts per class and per patient, unreadable files with reasons, exact duplicates
(same pixels), patients under both labels, images flagged as not a frontal chest, files outside
the CSV's folder or listed with conflicting labels, and refusals (empty class, too few patients
for the folds, conflicting labels).

:meth:`DataSummary.format_text` (what the terminal and the wizard show the user) names the
problem files so they can be fixed; :meth:`DataSummary.public_dict` (what goes into model cards,
bundles and JSON progress) holds counts, reason codes and keyed patient hashes only.
"""

from __future__ import annotations

import hashlib
import os
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pneumoview.errors import CancelledError, TrainingDataError
from pneumoview.labelled_data import (
    CLASS_NAMES,
    CONFLICT,
    NOT_REGULAR,
    OUTSIDE,
    UNLABELLED,
    UNREADABLE,
    Sample,
    discover,
)
from training.crops import FILE_ERRORS, CropCache, PreparedImage
from training.privacy import PatientHasher, hashed


@dataclass
class DataSummary:
    """What the user sees before training; JSON-able via :meth:`to_dict` (local) or :meth:`public_dict`."""

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
    excluded: list[dict[str, str]] = field(default_factory=list)  # outside the folder, not regular, conflicting
    file_list_sha256: str = ""
    cache_hits: int = 0
    cache_misses: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        """Everything, paths and raw patient IDs included: for this machine's eyes only."""
        out = asdict(self)
        out["class_names"] = list(self.class_names)
        out["ok"] = self.ok
        return out

    def public_dict(self, hasher: PatientHasher) -> dict[str, Any]:
        """Counts, reason codes and keyed patient hashes: no path, name or raw patient ID."""
        return {
            "n_files": self.n_files,
            "n_used": self.n_used,
            "class_names": list(self.class_names),
            "images_per_class": list(self.images_per_class),
            "patients_per_class": list(self.patients_per_class),
            "n_patients": self.n_patients,
            "images_per_patient": dict(self.images_per_patient),
            "patients_without_id": self.patients_without_id,
            "unreadable": len(self.unreadable),
            "unlabelled": len(self.unlabelled),
            "excluded": dict(Counter(p["kind"] for p in self.excluded)),
            "duplicate_groups": len(self.duplicates),
            "duplicate_files_left_out": sum(len(g) - 1 for g in self.duplicates),
            "mixed_patients": len(self.mixed_patients),
            "mixed_patient_hashes": hashed(self.mixed_patients, hasher),
            "not_frontal": dict(Counter(p["code"] for p in self.not_frontal)),
            "lungs_not_found": len(self.lungs_not_found),
            "file_list_sha256": self.file_list_sha256,
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "errors": [e for e in self.errors if not e.startswith(CONFLICT)]
            + (
                [f"{CONFLICT}: {self._n_conflicts()} file(s) listed with different labels"]
                if self._n_conflicts()
                else []
            ),
            "warnings": list(self.warnings),
            "ok": self.ok,
        }

    def _n_conflicts(self) -> int:
        return sum(1 for p in self.excluded if p["kind"] == CONFLICT)

    def format_text(self) -> str:
        lines = [f"Data: {self.source}"]
        for name, n_img, n_pat in zip(self.class_names, self.images_per_class, self.patients_per_class, strict=True):
            lines.append(f"  {name:15s} {n_img:6d} images  {n_pat:6d} patients")
        ipp = self.images_per_patient
        lines.append(
            f"  {self.n_used} of {self.n_files} files used; {self.n_patients} patients "
            f"(images per patient: min {ipp.get('min', 0):g}, median {ipp.get('median', 0):g}, "
            f"max {ipp.get('max', 0):g})"
        )
        for title, items in (
            ("unreadable", [f"{p['path']}: {p['reason']}" for p in self.unreadable]),
            ("unlabelled", [f"{p['path']}: {p['reason']}" for p in self.unlabelled]),
            ("excluded", [f"{p['path']}: {p['reason']}" for p in self.excluded]),
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


@dataclass
class _Checked:
    kept: list[Sample] = field(default_factory=list)
    images: list[PreparedImage] = field(default_factory=list)
    unreadable: list[dict[str, str]] = field(default_factory=list)
    not_frontal: list[dict[str, str]] = field(default_factory=list)
    lungs_not_found: list[str] = field(default_factory=list)
    by_pixels: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))


def _check_samples(
    samples: Sequence[Sample],
    cache: CropCache,
    *,
    include_flagged: bool,
    progress: Callable[[int, int], None] | None,
    cancel: Callable[[], bool] | None,
) -> _Checked:
    out = _Checked()
    for i, sample in enumerate(samples):
        if cancel is not None and cancel():
            raise CancelledError("data validation cancelled")
        try:
            prepared: PreparedImage | None = cache.prepare(sample.path)
        except FILE_ERRORS as exc:  # one bad file never stops the check: it is listed and left out
            out.unreadable.append({"path": str(sample.path), "reason": exc.reason})
            prepared = None
        if progress is not None:
            progress(i + 1, len(samples))
        if prepared is None:
            continue
        out.by_pixels[prepared.pixel_sha256].append(str(sample.path))
        if len(out.by_pixels[prepared.pixel_sha256]) > 1:
            continue  # exact duplicate: the first copy trains, the others are listed
        if prepared.suitability_code is not None:
            out.not_frontal.append(
                {"path": str(sample.path), "code": prepared.suitability_code, "reason": prepared.suitability_reason}
            )
            if not include_flagged:
                continue
        if not prepared.lungs_found:
            out.lungs_not_found.append(str(sample.path))
        out.kept.append(sample)
        out.images.append(prepared)
    return out


def validate(
    source: str | os.PathLike[str],
    *,
    folds: int = 5,
    cache: CropCache | None = None,
    include_flagged: bool = False,
    allow_outside: bool = False,
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
    samples, problems = discover(source, allow_outside=allow_outside)
    n_files = len(samples) + sum(1 for p in problems if p.kind != UNLABELLED or Path(p.path).is_file())
    checked = _check_samples(samples, cache, include_flagged=include_flagged, progress=progress, cancel=cancel)
    summary = _summarise(
        str(source), n_files, checked.kept, checked.images, folds=folds, min_patients_per_class=min_patients_per_class
    )
    summary.unreadable = checked.unreadable + [
        {"path": str(p.path), "reason": p.reason} for p in problems if p.kind == UNREADABLE
    ]
    summary.unlabelled = [{"path": str(p.path), "reason": p.reason} for p in problems if p.kind == UNLABELLED]
    summary.excluded = [
        {"path": str(p.path), "kind": p.kind, "reason": p.reason}
        for p in problems
        if p.kind in {OUTSIDE, NOT_REGULAR, CONFLICT}
    ]
    summary.duplicates = [paths for paths in checked.by_pixels.values() if len(paths) > 1]
    summary.not_frontal = checked.not_frontal
    summary.lungs_not_found = checked.lungs_not_found
    summary.cache_hits, summary.cache_misses = cache.hits, cache.misses
    _add_problem_notes(summary, samples)
    return PreparedDataset(checked.kept, checked.images, summary)


def _add_problem_notes(summary: DataSummary, samples: Sequence[Sample]) -> None:
    conflicts = [p for p in summary.excluded if p["kind"] == CONFLICT]
    if conflicts:
        summary.errors.append(f"{CONFLICT}: {len(conflicts)} file(s) are listed more than once with different labels")
    outside = sum(1 for p in summary.excluded if p["kind"] == OUTSIDE)
    if outside:
        summary.warnings.append(
            f"{outside} file(s) outside the CSV's folder are left out (--allow-outside to use them)"
        )
    if summary.duplicates:
        label_of = {str(s.path): s.label for s in samples}
        cross = [g for g in summary.duplicates if len({label_of.get(p) for p in g}) > 1]
        if cross:
            summary.warnings.append(f"{len(cross)} duplicate group(s) carry both labels: check the labels")
    if summary.unreadable:
        summary.warnings.append(f"{len(summary.unreadable)} file(s) could not be read and are left out")


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
                f"class '{name}' has only {patients_per_class[c]} patient(s): "
                f"at least {needed} are needed for {folds} folds"
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
        raise TrainingDataError("; ".join(summary.errors))
