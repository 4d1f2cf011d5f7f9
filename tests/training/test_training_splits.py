"""Patient-level stratified k-fold."""

from __future__ import annotations

import numpy as np
import pytest

from pneumoview.errors import TrainingDataError
from training.splits import folds_from_record, folds_record, patient_kfold


def _data(seed: int = 0) -> tuple[list[str], list[int]]:
    rng = np.random.default_rng(seed)
    patients, labels = [], []
    for p in range(63):
        label = 0 if p < 40 else 1  # ~63 % positives, as in the paper
        for _ in range(int(rng.integers(1, 4))):
            patients.append(f"P{p:03d}")
            labels.append(label)
    order = rng.permutation(len(patients))
    return [patients[i] for i in order], [labels[i] for i in order]


def test_folds_partition_samples_and_never_share_a_patient() -> None:
    patients, labels = _data()
    folds = patient_kfold(patients, labels, 5, seed=1)
    assert len(folds) == 5
    all_val = sorted(i for f in folds for i in f.val)
    assert all_val == list(range(len(patients)))
    for f in folds:
        assert set(f.train) | set(f.val) == set(range(len(patients)))
        assert not {patients[i] for i in f.train} & {patients[i] for i in f.val}


def test_folds_are_stratified() -> None:
    patients, labels = _data()
    y = np.array(labels)
    overall = np.mean(y == 0)
    for f in patient_kfold(patients, labels, 5, seed=2):
        frac = np.mean(y[list(f.val)] == 0)
        assert abs(frac - overall) < 0.12
        assert 0.12 < len(f.val) / len(y) < 0.28


def test_same_seed_same_split_and_other_seed_differs() -> None:
    patients, labels = _data()
    a = patient_kfold(patients, labels, 5, seed=7)
    b = patient_kfold(patients, labels, 5, seed=7)
    c = patient_kfold(patients, labels, 5, seed=8)
    assert a == b
    assert [f.val_patients for f in a] != [f.val_patients for f in c]


def test_split_rebuilt_from_record_over_reordered_samples() -> None:
    patients, labels = _data()
    folds = patient_kfold(patients, labels, 4, seed=3)
    record = folds_record(folds, seed=3)
    order = list(reversed(range(len(patients))))
    rebuilt = folds_from_record(record, [patients[i] for i in order])
    for f, g in zip(folds, rebuilt, strict=True):
        assert f.val_patients == g.val_patients
        assert sorted(order[i] for i in g.val) == list(f.val)
    with pytest.raises(TrainingDataError, match="not in the recorded split"):
        folds_from_record(record, patients + ["NEW"])


def test_refuses_empty_class_and_too_few_patients() -> None:
    with pytest.raises(TrainingDataError, match="no images"):
        patient_kfold(["a", "b", "c"], [0, 0, 0], 2)
    with pytest.raises(TrainingDataError, match="only 2 patient"):
        patient_kfold(["a", "b", "c", "d", "d"], [0, 0, 1, 1, 1], 3)


def test_split_record_holds_keyed_hashes_and_rebuilds_only_with_the_same_key() -> None:
    from pneumoview.errors import TrainingDataError
    from training.privacy import patient_hasher

    patients = [f"PID-{i // 2}" for i in range(20)]
    labels = [(i // 2) % 2 for i in range(20)]
    folds = patient_kfold(patients, labels, 2, seed=1)
    hasher = patient_hasher(b"k" * 32)
    record = folds_record(folds, seed=1, hasher=hasher)
    flat = [p for members in record["val_patients"] for p in members]
    assert all(p.startswith("P-") and "PID" not in p for p in flat) and len(flat) == 10
    rebuilt = folds_from_record(record, patients, hasher)
    assert [f.val for f in rebuilt] == [f.val for f in folds]
    with pytest.raises(TrainingDataError, match="key is needed"):
        folds_from_record(record, patients)
    with pytest.raises(TrainingDataError, match="not in the recorded split"):
        folds_from_record(record, patients, patient_hasher(b"other key"))
