"""Evaluation as in the PneumoLLM paper: sensitivity, specificity, accuracy (argmax), ROC AUC, AVG.

Conventions (PNEUMOLLM-SPEC "Evaluation"): class index 0 = pneumoconiosis (the positive class,
"Sick"), index 1 = normal. The score for the ROC curve is the softmax probability of class 0.
Accuracy, sensitivity and specificity use the argmax of the two logits (a tie goes to index 0,
as ``torch.argmax`` does). AVG is the mean of the four numbers. All values are fractions in
[0, 1]; the UI and the model card multiply by 100 where they show percentages.

The AUC is the Mann-Whitney U statistic with mid-ranks for ties, i.e. the probability that a
random positive scores higher than a random negative, ties counting one half.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import rankdata

POSITIVE_CLASS = 0  # pneumoconiosis

METRIC_NAMES = ("sensitivity", "specificity", "accuracy", "auc", "avg")


@dataclass(frozen=True)
class BinaryMetrics:
    """The paper's four metrics + AVG on one set of predictions, with the confusion counts."""

    sensitivity: float
    specificity: float
    accuracy: float
    auc: float
    avg: float
    tp: int
    fn: int
    fp: int
    tn: int

    @property
    def n_positive(self) -> int:
        return self.tp + self.fn

    @property
    def n_negative(self) -> int:
        return self.fp + self.tn

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def roc_auc(scores: Sequence[float] | np.ndarray, positive: Sequence[bool] | np.ndarray) -> float:
    """Area under the ROC curve by the rank (Mann-Whitney) formula, ties as mid-ranks.

    ``scores``: higher = more likely positive. ``positive``: bool per sample.
    Returns NaN when one of the two classes is absent (the AUC is undefined there).
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    pos = np.asarray(positive, dtype=bool).ravel()
    if s.shape != pos.shape:
        raise ValueError(f"scores {s.shape} and labels {pos.shape} differ in length")
    n_pos = int(pos.sum())
    n_neg = int(pos.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(s, method="average")
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_curve(
    scores: Sequence[float] | np.ndarray, positive: Sequence[bool] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points ``(fpr, tpr, thresholds)``, from (0, 0) to (1, 1), one point per distinct score.

    A sample is called positive when its score is >= the threshold; the first threshold is +inf.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    pos = np.asarray(positive, dtype=bool).ravel()
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    pos_sorted = pos[order]
    distinct = np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.size - 1] if s.size else np.array([], int)
    tps = np.cumsum(pos_sorted)[distinct]
    fps = np.cumsum(~pos_sorted)[distinct]
    n_pos = max(int(pos.sum()), 1)
    n_neg = max(int((~pos).sum()), 1)
    tpr = np.r_[0.0, tps / n_pos]
    fpr = np.r_[0.0, fps / n_neg]
    thresholds = np.r_[np.inf, s_sorted[distinct]]
    return fpr, tpr, thresholds


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def evaluate(
    probabilities: np.ndarray | Sequence[Sequence[float]], labels: Sequence[int] | np.ndarray
) -> BinaryMetrics:
    """Metrics from softmax probabilities ``[N, 2]`` (or logits: argmax and ranking are the same).

    ``labels``: class index per sample (0 = pneumoconiosis, 1 = normal).
    """
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64).ravel()
    if p.ndim != 2 or p.shape[1] != 2 or p.shape[0] != y.shape[0]:
        raise ValueError(f"expected probabilities [N, 2] matching {y.shape[0]} labels, got {p.shape}")
    predicted = np.argmax(p, axis=1)  # ties -> index 0 (positive), as torch.argmax
    is_pos = y == POSITIVE_CLASS
    called_pos = predicted == POSITIVE_CLASS
    tp = int(np.sum(is_pos & called_pos))
    fn = int(np.sum(is_pos & ~called_pos))
    fp = int(np.sum(~is_pos & called_pos))
    tn = int(np.sum(~is_pos & ~called_pos))
    sensitivity = _ratio(tp, tp + fn)
    specificity = _ratio(tn, tn + fp)
    accuracy = _ratio(tp + tn, y.size)
    # Score = probability (or logit margin) of the positive class.
    score = p[:, POSITIVE_CLASS] - p[:, 1 - POSITIVE_CLASS]
    auc = roc_auc(score, is_pos)
    avg = float(np.mean([sensitivity, specificity, accuracy, auc]))
    return BinaryMetrics(sensitivity, specificity, accuracy, auc, avg, tp, fn, fp, tn)


def summarise(per_fold: Sequence[BinaryMetrics]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation (ddof=1; 0 for one fold) of each metric over folds."""
    out: dict[str, dict[str, float]] = {}
    for name in METRIC_NAMES:
        values = np.array([getattr(m, name) for m in per_fold], dtype=np.float64)
        finite = values[np.isfinite(values)]
        mean = float(finite.mean()) if finite.size else math.nan
        sd = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
        out[name] = {"mean": mean, "sd": sd}
    return out


def format_summary(summary: dict[str, dict[str, float]]) -> str:
    """``"Sens 80.5 +/- 3.1 | Spec ... | AVG ..."`` in percent, for logs and the CLI."""
    short = {"sensitivity": "Sens", "specificity": "Spec", "accuracy": "Acc", "auc": "AUC", "avg": "AVG"}
    return " | ".join(
        f"{short[k]} {100 * v['mean']:.1f} +/- {100 * v['sd']:.1f}" for k, v in summary.items() if k in short
    )
