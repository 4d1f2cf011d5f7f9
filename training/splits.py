"""Patient-level stratified k-fold: no patient is ever in both the training and validation part.

The paper evaluates with five-fold cross-validation split by patient. The assignment here is
the greedy one of scikit-learn's ``StratifiedGroupKFold(shuffle=True)`` (written out because
scikit-learn is not a dependency): patients are shuffled with the seed, ordered by how
unevenly their images spread over the classes (stable sort), and each patient goes to the
fold that keeps the per-class proportions most even, ties going to the fold with fewer images.

The result is recorded in the bundle's manifest (seed + validation patients of each fold, as
keyed hashes: :mod:`training.privacy`) so the same split can be rebuilt from it on the same
installation (:func:`folds_from_record`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pneumoview.errors import TrainingDataError
from training.privacy import ID_SCHEME, ID_SCHEME_KEY, PatientHasher


@dataclass(frozen=True)
class Fold:
    """One fold: indices into the sample list (sorted) and the validation patient IDs (sorted)."""

    index: int
    train: tuple[int, ...]
    val: tuple[int, ...]
    val_patients: tuple[str, ...]


def patient_labels(patients: Sequence[str], labels: Sequence[int], n_classes: int = 2) -> dict[str, np.ndarray]:
    """Images per class for each patient: ``{patient_id: counts[n_classes]}``."""
    counts: dict[str, np.ndarray] = {}
    for pid, y in zip(patients, labels, strict=True):
        counts.setdefault(pid, np.zeros(n_classes, dtype=np.int64))[int(y)] += 1
    return counts


def check_foldable(patients: Sequence[str], labels: Sequence[int], n_folds: int, n_classes: int = 2) -> None:
    """Refuse (``TrainingDataError``) when a class is empty or has fewer patients than folds."""
    if n_folds < 2:
        raise TrainingDataError(f"cross-validation needs at least 2 folds, not {n_folds}")
    per_patient = patient_labels(patients, labels, n_classes)
    for c in range(n_classes):
        n_pat = sum(1 for counts in per_patient.values() if counts[c] > 0)
        if n_pat == 0:
            raise TrainingDataError(f"class {c} has no images: both classes are needed to train")
        if n_pat < n_folds:
            raise TrainingDataError(
                f"class {c} has images from only {n_pat} patient(s), fewer than the {n_folds} folds: "
                f"add data or choose at most {n_pat} folds"
            )


def patient_kfold(
    patients: Sequence[str], labels: Sequence[int], n_folds: int = 5, *, seed: int = 0, n_classes: int = 2
) -> list[Fold]:
    """Stratified k-fold over patients (groups). ``labels`` are class indices per sample."""
    check_foldable(patients, labels, n_folds, n_classes)
    per_patient = patient_labels(patients, labels, n_classes)
    ids = sorted(per_patient)  # deterministic starting order, independent of the sample order
    y_per_group = np.stack([per_patient[p] for p in ids])  # [G, C]
    y_total = y_per_group.sum(axis=0).astype(np.float64)

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ids))
    spread = np.std(y_per_group[order], axis=1)
    order = order[np.argsort(-spread, kind="mergesort")]

    y_per_fold = np.zeros((n_folds, n_classes), dtype=np.float64)
    fold_of: dict[str, int] = {}
    for g in order:
        best_fold, best_cost, best_size = -1, np.inf, np.inf
        for f in range(n_folds):
            y_per_fold[f] += y_per_group[g]
            cost = float(np.mean(np.std(y_per_fold / y_total, axis=0)))
            y_per_fold[f] -= y_per_group[g]
            size = y_per_fold[f].sum()
            if cost < best_cost - 1e-12 or (abs(cost - best_cost) <= 1e-12 and size < best_size):
                best_fold, best_cost, best_size = f, cost, size
        y_per_fold[best_fold] += y_per_group[g]
        fold_of[ids[g]] = best_fold
    return _folds_from_assignment(patients, fold_of, n_folds)


def _folds_from_assignment(patients: Sequence[str], fold_of: dict[str, int], n_folds: int) -> list[Fold]:
    folds = []
    for f in range(n_folds):
        val = tuple(i for i, p in enumerate(patients) if fold_of[p] == f)
        train = tuple(i for i, p in enumerate(patients) if fold_of[p] != f)
        val_patients = tuple(sorted({patients[i] for i in val}))
        folds.append(Fold(f, train, val, val_patients))
    return folds


def folds_record(folds: Sequence[Fold], *, seed: int, hasher: PatientHasher | None = None) -> dict[str, Any]:
    """JSON-able record of a split: seed and validation patients per fold (keyed hashes when ``hasher``)."""
    if hasher is None:
        return {"seed": seed, "n_folds": len(folds), "val_patients": [list(f.val_patients) for f in folds]}
    return {
        "seed": seed,
        "n_folds": len(folds),
        ID_SCHEME_KEY: ID_SCHEME,
        "val_patients": [sorted({hasher(p) for p in f.val_patients}) for f in folds],
    }


def folds_from_record(
    record: dict[str, Any], patients: Sequence[str], hasher: PatientHasher | None = None
) -> list[Fold]:
    """Rebuild the folds of a split record over (possibly reordered) samples.

    A record of keyed hashes needs the ``hasher`` of the installation that wrote it. Raises
    ``TrainingDataError`` when a patient of the data is not in the record.
    """
    keyed = record.get(ID_SCHEME_KEY) == ID_SCHEME
    if keyed and hasher is None:
        raise TrainingDataError("this split record holds keyed patient hashes; the key is needed to use it")
    key_of = {p: (hasher(p) if keyed and hasher is not None else p) for p in set(patients)}
    fold_of_key = {p: f for f, members in enumerate(record["val_patients"]) for p in members}
    missing = sum(1 for p in key_of.values() if p not in fold_of_key)
    if missing:
        raise TrainingDataError(
            f"{missing} patient(s) of these data are not in the recorded split "
            "(other data, or a split written on another installation)"
        )
    fold_of = {p: fold_of_key[k] for p, k in key_of.items()}
    return _folds_from_assignment(patients, fold_of, int(record["n_folds"]))
