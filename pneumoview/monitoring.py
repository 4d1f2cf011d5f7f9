"""Monitoring the operating point in use: weekly fraction flagged and reader-vs-AI agreement.

WHO's CAD guidance asks sites to keep watching the threshold after calibrating: a change in the
population, the X-ray equipment or the software moves the share of workers flagged. Per ISO week
(Monday-based, UTC), from the results database:

* **flagged fraction**: of the images analysed that week (the latest result of each image with a
  probability; demo results and unsupported images are left out), the share at or above the
  threshold stored with the result;
* **agreement**: of those images with a reader's decision ``agree`` / ``disagree``
  (``uncertain`` left out), the share ``agree``;
* **warning** when a week's flagged fraction leaves ``expected +- band``; ``expected`` is the
  settings' ``monitor_expected_flagged`` or, unset, the pooled flagged fraction of the first
  ``monitor_baseline_weeks`` weeks with results.

Reads the database through its own read-only SQLite connection (no Qt, no torch).
"""

from __future__ import annotations

import math
import os
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pneumoview.errors import StoreError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from pneumoview.settings import Settings


@dataclass(frozen=True)
class Observation:
    """One image's latest result, and the reader's latest decision about it."""

    analysed_at: str  # ISO 8601 UTC
    probability: float
    threshold: float
    decision: str = ""  # agree / disagree / uncertain / ""

    @property
    def flagged(self) -> bool:
        return self.probability >= self.threshold


@dataclass(frozen=True)
class Week:
    week: str  # ISO week, e.g. "2026-W48"
    start: date  # its Monday
    analysed: int
    flagged: int
    decided: int  # agree + disagree
    agreed: int
    warning: bool = False

    @property
    def flagged_fraction(self) -> float:
        return self.flagged / self.analysed if self.analysed else math.nan

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.decided if self.decided else None


@dataclass(frozen=True)
class MonitoringReport:
    weeks: list[Week]
    expected: float | None  # None: no baseline yet
    band: float
    expected_source: str  # "setting", "first N weeks" or "none"

    @property
    def warnings(self) -> list[Week]:
        return [w for w in self.weeks if w.warning]

    def message(self) -> str:
        if not self.warnings:
            return ""
        names = ", ".join(f"{w.week} ({w.flagged_fraction:.0%})" for w in self.warnings)
        assert self.expected is not None
        return (
            f"flagged fraction outside {self.expected:.0%} +- {self.band:.0%} in {names}: "
            "check the population, the equipment and the operating point"
        )


def _iso_week(stamp: str) -> tuple[str, date]:
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    year, week, _ = when.isocalendar()
    return f"{year}-W{week:02d}", date.fromisocalendar(year, week, 1)


def weekly(
    observations: Iterable[Observation],
    *,
    band: float = 0.10,
    expected: float | None = None,
    baseline_weeks: int = 4,
) -> MonitoringReport:
    """Group observations by ISO week and mark the weeks outside ``expected +- band``."""
    groups: dict[tuple[str, date], list[Observation]] = defaultdict(list)
    for obs in observations:
        if not (math.isfinite(obs.probability) and math.isfinite(obs.threshold)):
            raise StoreError(f"a stored result is not finite ({obs.probability!r}, {obs.threshold!r})")
        groups[_iso_week(obs.analysed_at)].append(obs)
    raw = []
    for (name, monday), items in sorted(groups.items(), key=lambda kv: kv[0][1]):
        decided = [o for o in items if o.decision in ("agree", "disagree")]
        raw.append(
            Week(
                name,
                monday,
                len(items),
                sum(o.flagged for o in items),
                len(decided),
                sum(o.decision == "agree" for o in decided),
            )
        )
    source = "setting"
    if expected is None and raw:
        base = raw[:baseline_weeks]
        expected = sum(w.flagged for w in base) / sum(w.analysed for w in base)
        source = f"first {len(base)} week(s)"
    elif expected is None:
        source = "none"
    weeks = (
        raw
        if expected is None
        else [
            Week(
                w.week,
                w.start,
                w.analysed,
                w.flagged,
                w.decided,
                w.agreed,
                warning=abs(w.flagged_fraction - expected) > band + 1e-12,
            )
            for w in raw
        ]
    )
    return MonitoringReport(weeks, expected, band, source)


def load_observations(db_path: str | os.PathLike[str]) -> list[Observation]:
    """Latest non-demo result with a probability for each image, with its latest decision."""
    path = Path(db_path)
    if not path.is_file():
        raise StoreError("no results database here", path=path)
    sql = (
        "SELECT r.analysed_at, r.probability, r.threshold, COALESCE(d.decision, '') AS decision "
        "FROM results r "
        "LEFT JOIN decisions d ON d.id = (SELECT MAX(id) FROM decisions WHERE image_key = r.image_key) "
        "WHERE r.id IN (SELECT MAX(id) FROM results GROUP BY image_key) "
        "AND r.probability IS NOT NULL AND r.threshold IS NOT NULL AND r.demo = 0 "
        "ORDER BY r.analysed_at"
    )
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            rows = conn.execute(sql).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the results database: {exc}", path=path) from exc
    return [Observation(str(r[0]), float(r[1]), float(r[2]), str(r[3])) for r in rows]


def report_for(db_path: str | os.PathLike[str], settings: Settings) -> MonitoringReport:
    """:func:`weekly` over the database with the settings' band, expected fraction and baseline."""
    return weekly(
        load_observations(db_path),
        band=settings.monitor_band,
        expected=settings.monitor_expected_flagged,
        baseline_weeks=settings.monitor_baseline_weeks,
    )


def draw(figure: Figure, report: MonitoringReport) -> None:
    """Two panels on a matplotlib Figure: weekly flagged fraction with the band, and agreement."""
    weeks: Sequence[Week] = report.weeks
    x = list(range(len(weeks)))
    labels = [w.week for w in weeks]
    top = figure.add_subplot(2, 1, 1)
    top.plot(x, [w.flagged_fraction for w in weeks], marker="o", color="C0", label="flagged fraction")
    if report.expected is not None:
        low, high = max(0.0, report.expected - report.band), min(1.0, report.expected + report.band)
        top.axhspan(low, high, color="C2", alpha=0.15, label=f"expected ({report.expected_source}) +- band")
        warn = [i for i, w in enumerate(weeks) if w.warning]
        top.plot(warn, [weeks[i].flagged_fraction for i in warn], "x", color="C3", markersize=10, label="warning")
    top.set_ylim(0, 1)
    top.set_ylabel("flagged")
    top.legend(loc="upper left", fontsize="small")
    bottom = figure.add_subplot(2, 1, 2, sharex=top)
    points = [(i, w.agreement) for i, w in enumerate(weeks) if w.agreement is not None]
    bottom.plot([p[0] for p in points], [p[1] for p in points], marker="s", color="C1")
    bottom.set_ylim(0, 1)
    bottom.set_ylabel("reader agrees")
    bottom.set_xticks(x)
    bottom.set_xticklabels(labels, rotation=45, ha="right", fontsize="small")
