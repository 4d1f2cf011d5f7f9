"""Metrics against hand-computed cases (class 0 = pneumoconiosis = positive)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.metrics import evaluate, roc_auc, roc_curve, summarise


def test_auc_perfect_and_inverted() -> None:
    assert roc_auc([0.9, 0.8, 0.2, 0.1], [True, True, False, False]) == 1.0
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [True, True, False, False]) == 0.0


def test_auc_hand_computed_with_ties() -> None:
    # positives: 0.8, 0.5 ; negatives: 0.5, 0.3, 0.9
    # pairs (pos > neg): 0.8>0.5 yes, 0.8>0.3 yes, 0.8>0.9 no; 0.5 vs 0.5 tie (1/2), 0.5>0.3 yes, 0.5>0.9 no
    # = (1 + 1 + 0 + 0.5 + 1 + 0) / 6 = 3.5 / 6
    auc = roc_auc([0.8, 0.5, 0.5, 0.3, 0.9], [True, True, False, False, False])
    assert auc == pytest.approx(3.5 / 6)


def test_auc_all_tied_is_half_and_one_class_is_nan() -> None:
    assert roc_auc([0.3] * 4, [True, False, True, False]) == 0.5
    assert math.isnan(roc_auc([0.1, 0.2], [True, True]))


def test_auc_equals_trapezoid_area_of_roc_curve() -> None:
    rng = np.random.default_rng(3)
    scores = np.round(rng.random(60), 1)  # many ties
    pos = rng.random(60) < 0.4
    fpr, tpr, thr = roc_curve(scores, pos)
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(scores, pos))


def test_evaluate_confusion_and_avg() -> None:
    # labels: 0 = sick. 3 sick, 2 healthy.
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3], [0.6, 0.4], [0.2, 0.8]])
    labels = [0, 0, 0, 1, 1]
    m = evaluate(probs, labels)
    assert (m.tp, m.fn, m.fp, m.tn) == (2, 1, 1, 1)
    assert m.sensitivity == pytest.approx(2 / 3)
    assert m.specificity == pytest.approx(1 / 2)
    assert m.accuracy == pytest.approx(3 / 5)
    # sick scores 0.9, 0.4, 0.7 vs healthy 0.6, 0.2: pairs won = 2 + 1 + 2 = 5 of 6
    assert m.auc == pytest.approx(5 / 6)
    assert m.avg == pytest.approx((2 / 3 + 1 / 2 + 3 / 5 + 5 / 6) / 4)


def test_evaluate_tie_goes_to_positive_class() -> None:
    m = evaluate(np.array([[0.5, 0.5], [0.5, 0.5]]), [0, 1])
    assert (m.tp, m.fp) == (1, 1)


def test_evaluate_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        evaluate(np.zeros((3, 3)), [0, 1, 0])


def test_summarise_mean_and_sample_sd() -> None:
    a = evaluate(np.array([[0.9, 0.1], [0.1, 0.9]]), [0, 1])  # all 1.0
    b = evaluate(np.array([[0.1, 0.9], [0.9, 0.1]]), [0, 1])  # all 0.0
    s = summarise([a, b])
    assert s["auc"]["mean"] == pytest.approx(0.5)
    assert s["auc"]["sd"] == pytest.approx(math.sqrt(0.5))
    assert summarise([a])["avg"] == {"mean": 1.0, "sd": 0.0}
