"""Inter-reader agreement: confusion tables, Cohen's kappa and weighted kappa (pure numpy).

* Cohen's kappa (Cohen 1960): ``(p_o - p_e) / (1 - p_e)`` with ``p_o`` the observed proportion of
  agreement (the table's diagonal) and ``p_e`` the agreement expected from the two readers'
  marginal proportions.
* Weighted kappa (Cohen 1968) on ordered categories ``0..k-1`` with agreement weights
  ``w_ij = 1 - |i-j|/(k-1)`` (linear) or ``1 - (i-j)^2/(k-1)^2`` (quadratic):
  ``(sum w*p_obs - sum w*p_exp) / (1 - sum w*p_exp)``.
* Kappa is undefined when ``p_e = 1`` (both readers used one and the same category throughout):
  it is returned as None, never as NaN.

What is compared: the major category 0/1/2/3 (Cohen's kappa), the 12-point profusion scale
(weighted kappas), and, reader against AI, the binary screening result (major category >= 1
versus the model's label at its operating point). Pairs are made per study from each reader's
latest reading; radiographs graded unacceptable (quality 4) have no category and are left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pneumoview.reading.ilo import PROFUSION
from pneumoview.reading.rules import AiSuggestion, SubmittedReading, latest_per_reader

MAJOR: tuple[str, ...] = ("0", "1", "2", "3")
BINARY: tuple[str, ...] = ("0", "1+")


def confusion(a: Sequence[str], b: Sequence[str], categories: Sequence[str]) -> np.ndarray:
    """``table[i, j]`` = how often rater A said ``categories[i]`` and rater B ``categories[j]``."""
    if len(a) != len(b):
        raise ValueError("both raters need the same number of ratings")
    index = {c: i for i, c in enumerate(categories)}
    table = np.zeros((len(categories), len(categories)), dtype=np.int64)
    for x, y in zip(a, b):
        table[index[x], index[y]] += 1
    return table


def kappa(table: np.ndarray, weights: str = "none") -> float | None:
    """Cohen's kappa of a square confusion table; ``weights`` none / linear / quadratic."""
    counts = np.asarray(table, dtype=np.float64)
    k = counts.shape[0]
    n = counts.sum()
    if n == 0 or k < 2:
        return None
    p = counts / n
    expected = np.outer(p.sum(axis=1), p.sum(axis=0))
    i, j = np.indices((k, k))
    if weights == "none":
        w = (i == j).astype(np.float64)
    elif weights == "linear":
        w = 1.0 - np.abs(i - j) / (k - 1)
    elif weights == "quadratic":
        w = 1.0 - (i - j) ** 2 / (k - 1) ** 2
    else:
        raise ValueError(f"weights must be none, linear or quadratic, not {weights!r}")
    p_o = float((w * p).sum())
    p_e = float((w * expected).sum())
    if np.isclose(p_e, 1.0):
        return None
    return (p_o - p_e) / (1.0 - p_e)


@dataclass(frozen=True)
class Agreement:
    """Agreement of two raters on ``n`` paired studies: tables and kappas (None when undefined)."""

    rater_a: str
    rater_b: str
    n: int
    major_table: np.ndarray  # 4x4 over MAJOR, or 2x2 over BINARY for reader-vs-AI
    major_categories: tuple[str, ...]
    kappa_major: float | None
    profusion_table: np.ndarray | None = None  # 12x12 over PROFUSION (reader pairs only)
    kappa_linear: float | None = None
    kappa_quadratic: float | None = None

    @property
    def observed(self) -> float | None:
        """Proportion of exact agreement on the major category."""
        return float(np.trace(self.major_table) / self.n) if self.n else None


def _classified(readings: Iterable[SubmittedReading]) -> dict[str, dict[str, SubmittedReading]]:
    """study -> reader -> latest classified reading."""
    by_study: dict[str, list[SubmittedReading]] = {}
    for r in readings:
        by_study.setdefault(r.study_uid, []).append(r)
    return {
        study: {r.reader: r for r in latest_per_reader(rs) if r.reading.profusion is not None}
        for study, rs in by_study.items()
    }


def reader_pair(readings: Iterable[SubmittedReading], reader_a: str, reader_b: str) -> Agreement:
    """Agreement of two readers over the studies both classified."""
    pairs = [
        (by[reader_a].reading, by[reader_b].reading)
        for by in _classified(readings).values()
        if reader_a in by and reader_b in by
    ]
    major_a = [str(a.major_category) for a, _ in pairs]
    major_b = [str(b.major_category) for _, b in pairs]
    prof = confusion([str(a.profusion) for a, _ in pairs], [str(b.profusion) for _, b in pairs], PROFUSION)
    major = confusion(major_a, major_b, MAJOR)
    return Agreement(
        reader_a,
        reader_b,
        len(pairs),
        major,
        MAJOR,
        kappa(major),
        prof,
        kappa(prof, "linear"),
        kappa(prof, "quadratic"),
    )


def reader_vs_ai(readings: Iterable[SubmittedReading], ai: Mapping[str, AiSuggestion], reader: str) -> Agreement:
    """Binary agreement (0 vs 1/2/3 against the AI's label at its operating point)."""
    pairs = [
        (by[reader].reading, ai[study]) for study, by in _classified(readings).items() if reader in by and study in ai
    ]
    a = ["1+" if (r.major_category or 0) >= 1 else "0" for r, _ in pairs]
    b = ["1+" if s.positive else "0" for _, s in pairs]
    table = confusion(a, b, BINARY)
    return Agreement(reader, "AI", len(pairs), table, BINARY, kappa(table))


def all_pairs(readings: Sequence[SubmittedReading]) -> list[Agreement]:
    """Every pair of readers who read at least one study in common."""
    readers = sorted({r.reader for r in readings})
    out = []
    for i, a in enumerate(readers):
        for b in readers[i + 1 :]:
            agreement = reader_pair(readings, a, b)
            if agreement.n:
                out.append(agreement)
    return out


def format_kappa(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
