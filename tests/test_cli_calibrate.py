"""``pneumoview calibrate`` end to end: the real demo model on the real labelled set ``cxr-labelled``.

The demo model's scores mean nothing; what is checked is that the figures agree with each other
and with the table, and that a saved operating point is bound to the demo bundle's fingerprint.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from data_support import shared_path

from pneumoview.cli import main


@pytest.fixture(scope="module")
def run_once(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    out = tmp_path_factory.mktemp("out")
    data = shared_path("cxr-labelled", "labels.csv")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PNEUMOVIEW_HOME", str(home))
        code = main(
            [
                "calibrate",
                str(data),
                "--demo",
                "--target-sensitivity",
                "0.9",
                "--prevalence",
                "0.05",
                "--json",
                str(out / "c.json"),
                "--plot",
                str(out / "c.png"),
                "--save",
                "--who",
                "tester",
                "--bootstrap",
                "500",
                "-q",
            ]
        )
        yield code, json.loads((out / "c.json").read_text()), out, home


@pytest.mark.slow
def test_figures_are_self_consistent(run_once) -> None:
    code, result, out, _home = run_once
    assert code == 0
    assert result["n"] == 100 and result["n_positive"] == 50 and result["n_negative"] == 50
    for key in ("threshold", "sensitivity", "specificity", "auc", "auc_ci", "bundle_fingerprint"):
        assert key in result
    assert result["demo"] is True and len(result["bundle_fingerprint"]) == 64
    tp, fp, tn, fn = result["tp"], result["fp"], result["tn"], result["fn"]
    assert tp + fn == 50 and tn + fp == 50
    assert result["sensitivity"] == tp / 50 and result["specificity"] == tn / 50
    assert result["sensitivity"] >= 0.9
    assert result["auc_ci"][0] <= result["auc"] <= result["auc_ci"][1]
    table = result["table"]
    rows = [r for r in table if r["threshold"] == result["threshold"]]
    assert len(rows) == 1 and rows[0]["tp"] == tp
    # The chosen row is the highest threshold reaching the target.
    assert all(r["sensitivity"] < 0.9 for r in table if r["threshold"] > result["threshold"])
    # The AUC equals the area under the table's own ROC points (trapezoids handle ties).
    fpr = np.array([1 - r["specificity"] for r in table])
    tpr = np.array([r["sensitivity"] for r in table])
    assert float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)) == pytest.approx(result["auc"])
    se, sp, p = result["sensitivity"], result["specificity"], 0.05
    assert result["referrals_per_100"] == pytest.approx(100 * (se * p + (1 - sp) * (1 - p)))
    assert (out / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert result["data_summary"]["n_patients"] == 100


@pytest.mark.slow
def test_saved_point_is_bound_to_the_bundle_and_audited(run_once) -> None:
    _code, result, _out, home = run_once
    from pneumoview.operating_points import OperatingPointStore
    from pneumoview.store import ResultStore

    store = OperatingPointStore(home / "data" / "operating_points.json")
    answer = store.threshold_for(result["bundle_fingerprint"])
    assert answer.point is not None and answer.point.id == result["operating_point_id"]
    assert answer.threshold == result["threshold"] and answer.point.created_by == "tester"
    assert answer.point.figures["auc"] == result["auc"]
    assert store.threshold_for("0" * 64).needs_choice
    with ResultStore(home / "data" / "pneumoview.sqlite3") as db:
        events = db.audit_events(kind="operating-point-changed")
        assert events[0].detail["operating_point_id"] == result["operating_point_id"]
        assert db.verify_audit().ok


def test_one_target_is_required(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["calibrate", str(tmp_path), "--demo", "--json", str(tmp_path / "x.json")])
    assert "target" in capsys.readouterr().err


def test_unusable_data_is_one_line(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("PNEUMOVIEW_HOME", str(tmp_path))
    code = main(
        [
            "calibrate",
            str(tmp_path / "missing"),
            "--demo",
            "--target-specificity",
            "0.8",
            "--json",
            str(tmp_path / "nodir" / "x.json"),
        ]
    )
    assert code == 2 and "folder does not exist" in capsys.readouterr().err
