"""Operating-point figures from scores and reference labels (pure numpy; no torch, no Qt).

What a site needs to choose its own threshold, following the WHO guidance for calibrating
computer-aided detection of chest radiographs on the local population (WHO operational handbook
on tuberculosis, module 2, 2021, and its CAD calibration toolkit):

* the ROC curve and its AUC with a 95 % bootstrap confidence interval (stratified by class: each
  replicate keeps the numbers of positives and negatives, percentile interval, fixed seed; with
  patient IDs, whole patients are resampled);
* sensitivity and specificity with Wilson score 95 % intervals at *every* candidate threshold
  (each distinct score; an image is flagged when its score >= threshold);
* the threshold that reaches a target sensitivity (the highest such threshold, i.e. the best
  specificity among those that reach it) or a target specificity (the lowest such threshold);
* at a stated prevalence: referrals per 100 workers screened, PPV and NPV (Bayes' rule on the
  sensitivity and specificity; the sample's own prevalence when none is stated).

Scores are P(pneumoconiosis) in [0, 1]; ``positive`` is the reference label (True =
pneumoconiosis). Non-finite scores are an error, never silently dropped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pneumoview.errors import CalibrationError

if TYPE_CHECKING:
    import os

    from matplotlib.figure import Figure

#: Two-sided 95 % normal quantile.
Z95 = 1.959963984540054
DEFAULT_BOOTSTRAP = 2000
DEFAULT_SEED = 20240229


# --------------------------------------------------------------------------- inputs
def _inputs(
    scores: Sequence[float] | np.ndarray, positive: Sequence[bool] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(positive).reshape(-1)
    if s.shape != y.shape:
        raise CalibrationError(f"{s.size} scores but {y.size} labels")
    if y.dtype != bool:
        if not np.isin(y, (0, 1)).all():
            raise CalibrationError("labels must be true/false (1 = pneumoconiosis, 0 = normal)")
        y = y.astype(bool)
    if not np.isfinite(s).all():
        bad = int(np.flatnonzero(~np.isfinite(s))[0])
        raise CalibrationError(f"score {bad} is not a finite number ({s[bad]!r})")
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise CalibrationError(f"calibration needs both classes: {n_pos} with pneumoconiosis, {y.size - n_pos} normal")
    return s, y


# --------------------------------------------------------------------------- primitives
def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927); (0, 1) when ``trials`` is 0."""
    if trials <= 0:
        return (0.0, 1.0)
    if not 0 <= successes <= trials:
        raise CalibrationError(f"{successes} successes out of {trials} trials")
    p = successes / trials
    z2 = z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return (low, high)


def auc(scores: Sequence[float] | np.ndarray, positive: Sequence[bool] | np.ndarray) -> float:
    """Area under the ROC curve = P(score of a positive > score of a negative) + 0.5 P(tie)
    (the Mann-Whitney U statistic divided by n_pos * n_neg), from mid-ranks."""
    s, y = _inputs(scores, positive)
    return _auc(s, y)


def _auc(s: np.ndarray, y: np.ndarray) -> float:
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(s.size, dtype=np.float64)
    # mid-ranks for ties
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    mid = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(mid, counts)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def bootstrap_auc_ci(
    scores: Sequence[float] | np.ndarray,
    positive: Sequence[bool] | np.ndarray,
    *,
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = DEFAULT_SEED,
    level: float = 0.95,
    groups: Sequence[str] | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the AUC, deterministic for a given ``seed``.

    Without ``groups``, positives and negatives are resampled separately (stratified), so every
    replicate has both classes. With ``groups`` (e.g. patient IDs: several images of one worker
    are not independent), whole groups are resampled, stratified by whether a group holds any
    positive image; a replicate with one class only is drawn again.
    """
    s, y = _inputs(scores, positive)
    if n_bootstrap < 10:
        raise CalibrationError(f"at least 10 bootstrap replicates are needed, not {n_bootstrap}")
    rng = np.random.default_rng(seed)
    values = np.empty(n_bootstrap)
    if groups is None:
        pos, neg = s[y], s[~y]
        labels = np.concatenate([np.ones(pos.size, bool), np.zeros(neg.size, bool)])
        for i in range(n_bootstrap):
            values[i] = _auc(np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)]), labels)
    else:
        values = _cluster_bootstrap(s, y, groups, n_bootstrap, rng)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def _cluster_bootstrap(
    s: np.ndarray, y: np.ndarray, groups: Sequence[str], n_bootstrap: int, rng: np.random.Generator
) -> np.ndarray:
    keys = np.asarray([str(g) for g in groups])
    if keys.shape != s.shape:
        raise CalibrationError(f"{keys.size} group labels for {s.size} scores")
    _, index = np.unique(keys, return_inverse=True)
    members = [np.flatnonzero(index == g) for g in range(index.max() + 1)]
    with_pos = [m for m in members if y[m].any()]
    without = [m for m in members if not y[m].any()]
    if not with_pos or not without:
        raise CalibrationError("the groups must include some with and some without pneumoconiosis")
    values = np.empty(n_bootstrap)
    for i in range(n_bootstrap):
        for _attempt in range(100):
            picked = [with_pos[j] for j in rng.integers(0, len(with_pos), len(with_pos))] + [
                without[j] for j in rng.integers(0, len(without), len(without))
            ]
            rows = np.concatenate(picked)
            if y[rows].all() or not y[rows].any():
                continue
            values[i] = _auc(s[rows], y[rows])
            break
        else:  # pragma: no cover - needs a pathological grouping
            raise CalibrationError("cannot draw bootstrap samples with both classes from these groups")
    return values


# --------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class OperatingRow:
    """Counts and rates when every image with ``score >= threshold`` is flagged."""

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    sensitivity: float
    sensitivity_ci: tuple[float, float]
    specificity: float
    specificity_ci: tuple[float, float]

    @property
    def flagged(self) -> int:
        return self.tp + self.fp


def operating_table(scores: Sequence[float] | np.ndarray, positive: Sequence[bool] | np.ndarray) -> list[OperatingRow]:
    """One row per distinct score (highest first: sensitivity rises down the table), plus a first
    row above every score (nothing flagged, threshold = nextafter(max score, +inf))."""
    s, y = _inputs(scores, positive)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    candidates = np.unique(s)[::-1]
    rows = [_row(float(np.nextafter(candidates[0], np.inf)), 0, 0, n_pos, n_neg)]
    for t in candidates:
        flagged = s >= t
        tp = int((flagged & y).sum())
        fp = int((flagged & ~y).sum())
        rows.append(_row(float(t), tp, fp, n_pos, n_neg))
    return rows


def _row(threshold: float, tp: int, fp: int, n_pos: int, n_neg: int) -> OperatingRow:
    fn, tn = n_pos - tp, n_neg - fp
    return OperatingRow(
        threshold=threshold,
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        sensitivity=tp / n_pos,
        sensitivity_ci=wilson_interval(tp, n_pos),
        specificity=tn / n_neg,
        specificity_ci=wilson_interval(tn, n_neg),
    )


def roc_points(table: Sequence[OperatingRow]) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) of the table's rows, from (0, 0) to (1, 1)."""
    fpr = np.array([1.0 - r.specificity for r in table])
    tpr = np.array([r.sensitivity for r in table])
    return fpr, tpr


def row_for_sensitivity(table: Sequence[OperatingRow], target: float) -> OperatingRow:
    """The highest threshold whose sensitivity reaches ``target`` (best specificity among them)."""
    _check_fraction("target sensitivity", target)
    for row in table:  # thresholds descend, sensitivity rises
        if row.sensitivity >= target:
            return row
    return table[-1]


def row_for_specificity(table: Sequence[OperatingRow], target: float) -> OperatingRow:
    """The lowest threshold whose specificity reaches ``target`` (best sensitivity among them)."""
    _check_fraction("target specificity", target)
    for row in reversed(table):  # thresholds ascend, specificity rises
        if row.specificity >= target:
            return row
    return table[0]


def _check_fraction(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 < value <= 1.0):
        raise CalibrationError(f"{name} must be a fraction in (0, 1], not {value!r}")


# --------------------------------------------------------------------------- prevalence
@dataclass(frozen=True)
class AtPrevalence:
    """Expected consequences of an operating point where ``prevalence`` of workers are positive."""

    prevalence: float
    referrals_per_100: float  # workers flagged for confirmation per 100 screened
    ppv: float | None  # None when nobody would be flagged
    npv: float | None  # None when everybody would be flagged
    stated: bool  # False: the calibration sample's own prevalence was used

    @property
    def referred_per_case_found(self) -> float | None:
        """Workers referred for confirmation per true case found (1 / PPV; WHO's "number needed to test")."""
        return None if not self.ppv else 1.0 / self.ppv


def at_prevalence(sensitivity: float, specificity: float, prevalence: float, *, stated: bool = True) -> AtPrevalence:
    """Referrals per 100 = 100 (Se p + (1 - Sp)(1 - p)); PPV = Se p / that; NPV = Sp (1 - p) / (1 - that)."""
    if not (math.isfinite(prevalence) and 0.0 < prevalence < 1.0):
        raise CalibrationError(f"prevalence must be a fraction strictly between 0 and 1, not {prevalence!r}")
    flagged = sensitivity * prevalence + (1.0 - specificity) * (1.0 - prevalence)
    ppv = sensitivity * prevalence / flagged if flagged > 0 else None
    npv = specificity * (1.0 - prevalence) / (1.0 - flagged) if flagged < 1 else None
    return AtPrevalence(prevalence, 100.0 * flagged, ppv, npv, stated)


# --------------------------------------------------------------------------- the whole calibration
@dataclass(frozen=True)
class Calibration:
    """Everything the calibration table, plot and JSON show."""

    n: int
    n_positive: int
    n_negative: int
    auc: float
    auc_ci: tuple[float, float]
    target: str  # "sensitivity" or "specificity"
    target_value: float
    chosen: OperatingRow
    at_prevalence: AtPrevalence
    table: list[OperatingRow] = field(repr=False)
    bootstrap: int = DEFAULT_BOOTSTRAP
    seed: int = DEFAULT_SEED

    @property
    def threshold(self) -> float:
        return self.chosen.threshold

    def figures(self) -> dict[str, Any]:
        """The chosen operating point's figures (no table), as saved with an operating point."""
        c = self.chosen
        p = self.at_prevalence
        return {
            "threshold": c.threshold,
            "sensitivity": c.sensitivity,
            "sensitivity_ci": list(c.sensitivity_ci),
            "specificity": c.specificity,
            "specificity_ci": list(c.specificity_ci),
            "tp": c.tp,
            "fp": c.fp,
            "tn": c.tn,
            "fn": c.fn,
            "auc": self.auc,
            "auc_ci": list(self.auc_ci),
            "n": self.n,
            "n_positive": self.n_positive,
            "n_negative": self.n_negative,
            "target": self.target,
            "target_value": self.target_value,
            "prevalence": p.prevalence,
            "prevalence_stated": p.stated,
            "referrals_per_100": p.referrals_per_100,
            "ppv": p.ppv,
            "npv": p.npv,
            "referred_per_case_found": p.referred_per_case_found,
            "bootstrap": self.bootstrap,
            "seed": self.seed,
        }

    def to_dict(self) -> dict[str, Any]:
        """:meth:`figures` plus the full table (JSON-ready)."""
        rows = []
        for r in self.table:
            d = asdict(r)
            d["sensitivity_ci"], d["specificity_ci"] = list(r.sensitivity_ci), list(r.specificity_ci)
            rows.append(d)
        return {**self.figures(), "table": rows}


def calibrate(
    scores: Sequence[float] | np.ndarray,
    positive: Sequence[bool] | np.ndarray,
    *,
    target_sensitivity: float | None = None,
    target_specificity: float | None = None,
    prevalence: float | None = None,
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = DEFAULT_SEED,
    groups: Sequence[str] | None = None,
) -> Calibration:
    """The operating point for exactly one target (sensitivity or specificity) and its figures.

    ``groups`` (patient IDs) makes the AUC's bootstrap resample patients, not images."""
    if (target_sensitivity is None) == (target_specificity is None):
        raise CalibrationError("give exactly one target: a sensitivity or a specificity")
    s, y = _inputs(scores, positive)
    table = operating_table(s, y)
    if target_sensitivity is not None:
        target, value, chosen = "sensitivity", float(target_sensitivity), row_for_sensitivity(table, target_sensitivity)
    else:
        assert target_specificity is not None
        target, value, chosen = "specificity", float(target_specificity), row_for_specificity(table, target_specificity)
    n_pos = int(y.sum())
    stated = prevalence is not None
    prev = float(prevalence) if prevalence is not None else n_pos / y.size
    return Calibration(
        n=int(y.size),
        n_positive=n_pos,
        n_negative=int(y.size - n_pos),
        auc=_auc(s, y),
        auc_ci=bootstrap_auc_ci(s, y, n_bootstrap=n_bootstrap, seed=seed, groups=groups),
        target=target,
        target_value=value,
        chosen=chosen,
        at_prevalence=at_prevalence(chosen.sensitivity, chosen.specificity, prev, stated=stated),
        table=table,
        bootstrap=n_bootstrap,
        seed=seed,
    )


# --------------------------------------------------------------------------- the plot
def draw_roc(figure: Figure, result: Calibration, *, title: str = "") -> None:
    """Draw the ROC curve, the diagonal and the chosen point with its Wilson intervals on a
    matplotlib ``Figure`` (the Qt dialog passes its canvas's figure; :func:`save_roc_plot` a new one)."""
    fpr, tpr = roc_points(result.table)
    ax = figure.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], linestyle=":", color="0.6", label="chance")
    ax.plot(
        fpr, tpr, color="C0", label=f"ROC, AUC {result.auc:.3f} (95% CI {result.auc_ci[0]:.3f}-{result.auc_ci[1]:.3f})"
    )
    c = result.chosen
    x, yv = 1.0 - c.specificity, c.sensitivity
    xerr = [[x - (1.0 - c.specificity_ci[1])], [(1.0 - c.specificity_ci[0]) - x]]
    yerr = [[yv - c.sensitivity_ci[0]], [c.sensitivity_ci[1] - yv]]
    ax.errorbar(
        [x],
        [yv],
        xerr=xerr,
        yerr=yerr,
        fmt="o",
        color="C3",
        label=f"threshold {c.threshold:.3f}: Se {c.sensitivity:.2f}, Sp {c.specificity:.2f}",
    )
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(title or f"n = {result.n} ({result.n_positive} positive)", fontsize="small")
    ax.legend(loc="lower right", fontsize="small")


def save_roc_plot(result: Calibration, path: str | os.PathLike[str], *, title: str = "") -> None:
    """Write the ROC plot as PNG (Agg canvas, no pyplot state), atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from pneumoview.atomic import atomic_open

    figure = Figure(figsize=(5.5, 5.0), dpi=100)
    FigureCanvasAgg(figure)
    draw_roc(figure, result, title=title)
    figure.tight_layout()
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png")
