"""Operating-point figures, checked against values worked out by hand on small tables."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pneumoview.calibration import (
    at_prevalence,
    auc,
    bootstrap_auc_ci,
    calibrate,
    operating_table,
    roc_points,
    row_for_sensitivity,
    row_for_specificity,
    save_roc_plot,
    wilson_interval,
)
from pneumoview.errors import CalibrationError

# Ten scores, highest first; P = pneumoconiosis, N = normal:
#   0.9 P, 0.8 P, 0.7 N, 0.6 P, 0.55 P, 0.5 N, 0.4 N, 0.3 P, 0.2 N, 0.1 N
SCORES = [0.9, 0.8, 0.7, 0.6, 0.55, 0.5, 0.4, 0.3, 0.2, 0.1]
POSITIVE = [True, True, False, True, True, False, False, True, False, False]


def test_auc_by_counting_pairs() -> None:
    # Positive-over-negative pairs: 0.9 and 0.8 beat all 5 normals (10), 0.6 and 0.55 beat
    # 0.5/0.4/0.2/0.1 (8), 0.3 beats 0.2/0.1 (2): 20 of 25 pairs.
    assert auc(SCORES, POSITIVE) == pytest.approx(20 / 25)
    # Shuffling the order changes nothing.
    order = np.random.default_rng(3).permutation(10)
    assert auc(np.array(SCORES)[order], np.array(POSITIVE)[order]) == pytest.approx(0.8)


def test_auc_counts_ties_as_half() -> None:
    # Pairs (P 0.5 vs N 0.5) tie -> 0.5; (P 0.9 vs N 0.5) -> 1; (P 0.5 vs N 0.1), (P 0.9 vs N 0.1) -> 1
    assert auc([0.5, 0.9, 0.5, 0.1], [True, True, False, False]) == pytest.approx(3.5 / 4)
    assert auc([0.3, 0.3], [True, False]) == pytest.approx(0.5)


def test_wilson_interval_matches_the_closed_form() -> None:
    # 4 of 5: p = 0.8, z = 1.96: centre = (0.8 + 1.96^2/10) / (1 + 1.96^2/5),
    # half = 1.96 sqrt(0.8*0.2/5 + 1.96^2/100) / (1 + 1.96^2/5)  ->  (0.3755, 0.9638)
    low, high = wilson_interval(4, 5)
    assert low == pytest.approx(0.37553, abs=1e-4)
    assert high == pytest.approx(0.96378, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 10)[1] == pytest.approx(0.27753, abs=1e-4)  # 1.96^2 / (10 + 1.96^2)


def test_table_counts_at_each_threshold() -> None:
    table = operating_table(SCORES, POSITIVE)
    assert len(table) == 11  # one row above every score, then one per distinct score
    assert (table[0].tp, table[0].fp) == (0, 0) and table[0].threshold > 0.9
    by_threshold = {round(r.threshold, 6): r for r in table[1:]}
    r = by_threshold[0.55]  # flagged: 0.9 P, 0.8 P, 0.7 N, 0.6 P, 0.55 P
    assert (r.tp, r.fp, r.tn, r.fn) == (4, 1, 4, 1)
    assert (r.sensitivity, r.specificity) == (0.8, 0.8)
    assert r.sensitivity_ci == pytest.approx(wilson_interval(4, 5))
    last = table[-1]
    assert (last.tp, last.fp, last.sensitivity, last.specificity) == (5, 5, 1.0, 0.0)
    fpr, tpr = roc_points(table)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


def test_threshold_for_targets() -> None:
    table = operating_table(SCORES, POSITIVE)
    # Sensitivity >= 0.8 first reached at 0.55 (0.9: 1/5, 0.8: 2/5, 0.7: 2/5, 0.6: 3/5, 0.55: 4/5)
    assert row_for_sensitivity(table, 0.8).threshold == 0.55
    assert row_for_sensitivity(table, 1.0).threshold == 0.3
    # Specificity >= 0.8: lowest such threshold is 0.55 (at 0.5 two normals are flagged: 0.6)
    assert row_for_specificity(table, 0.8).threshold == 0.55
    # Specificity 1.0 needs no normal flagged: lowest threshold above 0.7 is 0.8 (sensitivity 0.4)
    row = row_for_specificity(table, 1.0)
    assert (row.threshold, row.sensitivity) == (0.8, 0.4)
    with pytest.raises(CalibrationError):
        row_for_sensitivity(table, 0.0)
    with pytest.raises(CalibrationError):
        row_for_specificity(table, 1.5)


def test_prevalence_figures_by_hand() -> None:
    # Se 0.8, Sp 0.8, prevalence 10 %: flagged = 0.08 + 0.18 = 0.26 -> 26 per 100;
    # PPV = 0.08 / 0.26; NPV = 0.72 / 0.74
    p = at_prevalence(0.8, 0.8, 0.1)
    assert p.referrals_per_100 == pytest.approx(26.0)
    assert p.ppv == pytest.approx(0.08 / 0.26)
    assert p.npv == pytest.approx(0.72 / 0.74)
    assert p.referred_per_case_found == pytest.approx(0.26 / 0.08)  # 3.25 referred per case found
    assert at_prevalence(0.0, 1.0, 0.1).ppv is None  # nobody flagged
    for bad in (0.0, 1.0, math.nan):
        with pytest.raises(CalibrationError):
            at_prevalence(0.8, 0.8, bad)


def test_bootstrap_ci_is_seeded_and_brackets_the_auc() -> None:
    rng = np.random.default_rng(0)
    positive = np.arange(60) < 30
    scores = rng.normal(size=60) + positive * 1.0
    first = bootstrap_auc_ci(scores, positive, n_bootstrap=300, seed=5)
    assert first == bootstrap_auc_ci(scores, positive, n_bootstrap=300, seed=5)
    assert first != bootstrap_auc_ci(scores, positive, n_bootstrap=300, seed=6)
    value = auc(scores, positive)
    assert first[0] < value < first[1]
    assert 0.05 < first[1] - first[0] < 0.5  # n = 60: neither degenerate nor uninformative


def test_calibrate_is_self_consistent() -> None:
    result = calibrate(SCORES, POSITIVE, target_sensitivity=0.8, prevalence=0.1, n_bootstrap=200, seed=1)
    figures = result.figures()
    assert figures["threshold"] == 0.55 and figures["sensitivity"] == 0.8 and figures["specificity"] == 0.8
    assert figures["auc"] == pytest.approx(0.8) and figures["n"] == 10
    assert figures["referrals_per_100"] == pytest.approx(26.0)
    assert figures["auc_ci"][0] <= figures["auc"] <= figures["auc_ci"][1]
    # Without a stated prevalence, the sample's own (5 of 10) is used and said to be so.
    own = calibrate(SCORES, POSITIVE, target_specificity=1.0, n_bootstrap=50)
    assert own.at_prevalence.prevalence == 0.5 and not own.at_prevalence.stated
    assert own.threshold == 0.8
    assert len(result.to_dict()["table"]) == 11


@pytest.mark.parametrize(
    ("scores", "positive", "message"),
    [
        ([0.1, float("nan")], [True, False], "finite"),
        ([0.1, 0.2], [True, True], "both classes"),
        ([0.1, 0.2, 0.3], [True, False], "labels"),
    ],
)
def test_bad_inputs_are_refused(scores, positive, message) -> None:
    with pytest.raises(CalibrationError, match=message):
        calibrate(scores, positive, target_sensitivity=0.9)


def test_exactly_one_target() -> None:
    with pytest.raises(CalibrationError, match="exactly one"):
        calibrate(SCORES, POSITIVE)
    with pytest.raises(CalibrationError, match="exactly one"):
        calibrate(SCORES, POSITIVE, target_sensitivity=0.9, target_specificity=0.9)


def test_plot_is_a_png(tmp_path) -> None:
    out = tmp_path / "roc.png"
    save_roc_plot(calibrate(SCORES, POSITIVE, target_sensitivity=0.8, n_bootstrap=50), out, title="t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_patient_bootstrap_resamples_whole_patients() -> None:
    # Each patient has two identical images: image-level resampling treats them as independent and
    # gives a narrower interval than resampling patients.
    rng = np.random.default_rng(1)
    positive = np.repeat(np.arange(40) < 20, 2)
    scores = np.repeat(rng.normal(size=40), 2) + positive * 0.8
    patients = np.repeat([f"p{i}" for i in range(40)], 2)
    by_image = bootstrap_auc_ci(scores, positive, n_bootstrap=400, seed=2)
    by_patient = bootstrap_auc_ci(scores, positive, n_bootstrap=400, seed=2, groups=patients)
    assert by_patient == bootstrap_auc_ci(scores, positive, n_bootstrap=400, seed=2, groups=patients)
    assert by_patient[0] < auc(scores, positive) < by_patient[1]
    # Duplicated images are not new evidence: the by-patient interval is the one of 40 single
    # images, about sqrt(2) wider than the by-image one.
    single = bootstrap_auc_ci(scores[::2], positive[::2], n_bootstrap=400, seed=2)

    def width(ci: tuple[float, float]) -> float:
        return ci[1] - ci[0]

    assert width(by_patient) > 1.2 * width(by_image)
    assert width(by_patient) == pytest.approx(width(single), rel=0.25)
    with pytest.raises(CalibrationError, match="group labels"):
        bootstrap_auc_ci(scores, positive, groups=patients[:5])
