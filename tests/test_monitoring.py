"""Weekly monitoring from a real results database (SQLite through ResultStore)."""

from __future__ import annotations

import math

import pytest
from store_support import save_analysed

from pneumoview.errors import StoreError
from pneumoview.monitoring import Observation, load_observations, report_for, weekly
from pneumoview.settings import Settings
from pneumoview.store import ResultStore

# 2026-11-02 is a Monday (ISO week 45).
WEEKS = {45: "2026-11-03T10:00:00.000000Z", 46: "2026-11-10T10:00:00.000000Z", 47: "2026-11-17T10:00:00.000000Z"}


def add(store: ResultStore, name: str, week: int, probability: float, decision: str = "", *, demo: bool = False):
    key = save_analysed(store, name, probability, demo=demo, analysed_at=WEEKS[week])
    if decision:
        store.save_decision(key, decision, reviewer="r")


@pytest.fixture()
def db(tmp_path):
    path = tmp_path / "r.sqlite3"
    with ResultStore(path) as store:
        # week 45: 4 analysed, 1 flagged; decisions agree, agree, disagree, uncertain
        add(store, "a1", 45, 0.9, "agree")
        add(store, "a2", 45, 0.1, "agree")
        add(store, "a3", 45, 0.2, "disagree")
        add(store, "a4", 45, 0.3, "uncertain")
        # week 46: 2 analysed, 1 flagged, no decisions; a demo result is left out
        add(store, "b1", 46, 0.6)
        add(store, "b2", 46, 0.4)
        add(store, "demo", 46, 0.99, demo=True)
        # week 47: 2 analysed, 2 flagged (0.5 is at the threshold: flagged)
        add(store, "c1", 47, 0.5, "agree")
        add(store, "c2", 47, 0.95)
        # an image analysed again in week 47 counts once, in its latest week
        save_analysed(store, "a2", 0.05, analysed_at=WEEKS[47])
    return path


def test_weekly_counts_by_hand(db) -> None:
    report = weekly(load_observations(db), band=0.2, baseline_weeks=2)
    assert [w.week for w in report.weeks] == ["2026-W45", "2026-W46", "2026-W47"]
    w45, w46, w47 = report.weeks
    assert (w45.analysed, w45.flagged, w45.decided, w45.agreed) == (3, 1, 2, 1)  # a2 moved to week 47
    assert (w46.analysed, w46.flagged, w46.agreement) == (2, 1, None)
    assert (w47.analysed, w47.flagged, w47.decided, w47.agreed) == (3, 2, 2, 2)
    assert w47.start.isoformat() == "2026-11-16"
    # Baseline: first two weeks pooled, (1 + 1) / (3 + 2) = 0.4; week 47 at 2/3 is 0.267 away > 0.2.
    assert report.expected == pytest.approx(0.4) and report.expected_source == "first 2 week(s)"
    assert [w.warning for w in report.weeks] == [False, False, True]
    assert "2026-W47" in report.message()


def test_expected_from_settings(db) -> None:
    settings = Settings(monitor_band=0.05, monitor_expected_flagged=0.5)
    report = report_for(db, settings)
    assert report.expected_source == "setting"
    assert [w.warning for w in report.weeks] == [True, False, True]  # 0.333, 0.5, 0.667


def test_empty_and_missing() -> None:
    report = weekly([])
    assert report.weeks == [] and report.expected is None and report.message() == ""
    with pytest.raises(StoreError):
        load_observations("/nonexistent/db.sqlite3")
    with pytest.raises(StoreError):
        weekly([Observation("2026-11-03T10:00:00Z", math.nan, 0.5)])


def test_plot_draws(db) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from pneumoview.monitoring import draw

    figure = Figure()
    FigureCanvasAgg(figure)
    draw(figure, weekly(load_observations(db), band=0.2, baseline_weeks=2))
    top, bottom = figure.axes
    assert len(top.lines[0].get_xdata()) == 3 and len(bottom.lines[0].get_xdata()) == 2
