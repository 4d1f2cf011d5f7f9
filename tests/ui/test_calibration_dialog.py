"""Calibration, operating-point question and monitoring dialogs, offscreen, with real files and stores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pneumoview.operating_points import CONFIRMED_DEFAULT, OperatingPointStore
from pneumoview.ui.calibration_dialog import (
    CALIBRATE,
    CANCEL,
    CONFIRM,
    CalibrationDialog,
    operating_point_box,
    threshold_for_bundle,
)

FP = "c" * 64
SCORES = [0.9, 0.8, 0.7, 0.6, 0.55, 0.5, 0.4, 0.3, 0.2, 0.1]
POSITIVE = [True, True, False, True, True, False, False, True, False, False]


def calibration_json(tmp_path: Path, fingerprint: str = FP) -> Path:
    path = tmp_path / "cal.json"
    path.write_text(
        json.dumps(
            {
                "scores": SCORES,
                "positive": POSITIVE,
                "bundle_fingerprint": fingerprint,
                "demo": False,
                "data_summary": {"n": 10},
            }
        )
    )
    return path


def test_dialog_table_plot_and_save(qtbot, tmp_path) -> None:
    saved = []
    store = OperatingPointStore(tmp_path / "op.json")
    dialog = CalibrationDialog(bundle_fingerprint=FP, bundle_id="m1", who="Dr A", points=store, on_saved=saved.append)
    qtbot.addWidget(dialog)
    assert not dialog.save_button.isEnabled()
    dialog.load_json(calibration_json(tmp_path))
    dialog.target_spin.setValue(0.8)  # sensitivity >= 0.8 -> threshold 0.55 (hand-checked in test_calibration)
    assert dialog.table.rowCount() == 11
    selected = dialog.table.selectionModel().selectedRows()[0].row()
    assert dialog.table.item(selected, 0).text() == "0.5500"
    assert "Threshold 0.5500" in dialog.figures_label.text() and "AUC 0.800" in dialog.figures_label.text()
    assert dialog.figure.axes and dialog.save_button.isEnabled()
    dialog.target_combo.setCurrentText("specificity")
    dialog.target_spin.setValue(1.0)
    assert dialog.calibration.threshold == 0.8
    dialog.save_button.click()
    assert saved and saved[0].threshold == 0.8 and saved[0].created_by == "Dr A"
    assert store.threshold_for(FP).threshold == 0.8


def test_scores_of_another_model_cannot_set_this_ones_threshold(qtbot, tmp_path) -> None:
    store = OperatingPointStore(tmp_path / "op.json")
    dialog = CalibrationDialog(bundle_fingerprint=FP, bundle_id="m1", points=store)
    qtbot.addWidget(dialog)
    dialog.load_json(calibration_json(tmp_path, fingerprint="d" * 64))
    assert not dialog.save_button.isEnabled() and "another model" in dialog.figures_label.text()
    assert dialog.save() is None and store.points() == []


def test_a_file_that_is_not_a_calibration_is_refused(qtbot, tmp_path) -> None:
    from pneumoview.errors import PneumoViewError

    bad = tmp_path / "x.json"
    bad.write_text("{}")
    dialog = CalibrationDialog(bundle_fingerprint=FP)
    qtbot.addWidget(dialog)
    with pytest.raises(PneumoViewError, match="not a calibration file"):
        dialog.load_json(bad)


@pytest.fixture()
def bundle(tmp_path) -> Path:
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"weights_sha256": FP, "model_id": "model-x"}))
    return folder


@pytest.mark.parametrize(("which", "expected"), [(CONFIRM, 0.5), (CALIBRATE, None), (CANCEL, None)])
def test_no_operating_point_asks_and_never_reuses_another(qtbot, tmp_path, bundle, which, expected) -> None:
    store = OperatingPointStore(tmp_path / "op.json")
    store.confirm_default(bundle_fingerprint="e" * 64, bundle_id="other", threshold=0.3)  # another bundle's
    audited, calibrations, asked = [], [], []

    def click(parent, *, bundle_id, default):
        box, choices = operating_point_box(parent, bundle_id=bundle_id, default=default)
        qtbot.addWidget(box)
        asked.append(box.text())
        button = next(b for b, choice in choices.items() if choice == which)
        button.click()
        return choices[box.clickedButton()]

    threshold = threshold_for_bundle(
        None,
        bundle,
        default=0.5,
        who="Dr A",
        points=store,
        ask=click,
        audit=lambda kind, detail: audited.append((kind, detail)),
        open_calibration=lambda fp, mid: calibrations.append((fp, mid)),
    )
    assert threshold == expected
    assert "model-x" in asked[0] and "calibrate" in asked[0].lower()
    if which == CONFIRM:
        assert store.threshold_for(FP).point.kind == CONFIRMED_DEFAULT
        assert audited[0][0] == "operating-point-changed" and audited[0][1]["threshold"] == 0.5
        # Next time nothing is asked.
        assert threshold_for_bundle(None, bundle, default=0.5, who="", points=store, ask=None) == 0.5
    else:
        assert store.threshold_for(FP).needs_choice and not audited
        assert calibrations == ([(FP, "model-x")] if which == CALIBRATE else [])


def test_monitoring_dialog_shows_the_warning(qtbot, tmp_path) -> None:
    from pneumoview.monitoring import Observation, weekly
    from pneumoview.ui.monitoring_dialog import MonitoringDialog

    observations = [
        Observation(f"2026-11-{day:02d}T10:00:00Z", p, 0.5)
        for day, p in [(3, 0.1), (3, 0.2), (10, 0.1), (10, 0.9), (17, 0.9), (17, 0.8)]
    ]
    report = weekly(observations, band=0.2, expected=0.25)
    dialog = MonitoringDialog(report)
    qtbot.addWidget(dialog)
    assert "Warning" in dialog.warning_label.text() and "2026-W47" in dialog.warning_label.text()
    assert len(dialog.figure.axes) == 2
    empty = MonitoringDialog(weekly([]))
    qtbot.addWidget(empty)
    assert "No analysed images" in empty.warning_label.text()


def test_main_window_uses_the_bundles_operating_point(qtbot, tmp_path, bundle, monkeypatch) -> None:
    from pneumoview.ui.analysis_process import EngineSpec
    from pneumoview.ui.main_window import MainWindow

    monkeypatch.setenv("PNEUMOVIEW_HOME", str(tmp_path / "home"))
    window = MainWindow()
    qtbot.addWidget(window)
    window.engine_spec = EngineSpec("demo")
    assert window.analysis_threshold() == window.settings.threshold  # the demo model has no operating point
    OperatingPointStore().confirm_default(bundle_fingerprint=FP, bundle_id="model-x", threshold=0.37)
    window.engine_spec = EngineSpec("bundle", bundle=str(bundle))
    assert window.analysis_threshold() == 0.37
    threshold, point_id = window.analysis_operating_point()  # the id every result's provenance records
    assert threshold == 0.37 and point_id == OperatingPointStore().threshold_for(FP).point.id != ""
    menus = {a.text() for a in window.menuBar().actions()}
    assert "&Model" in menus and window.act_calibrate.text().startswith("&Calibrate")
    dialog = window.open_calibration_dialog()
    qtbot.addWidget(dialog)
    assert dialog.bundle_fingerprint == FP and dialog.bundle_id == "model-x"
    monitoring = window.open_monitoring_dialog()
    qtbot.addWidget(monitoring)
    assert "No analysed images" in monitoring.warning_label.text()
    window.audit_event("model-activated", {"bundle": "x"})
    assert window.result_store.audit_events(kind="model-activated")[0].detail == {"bundle": "x"}
    assert window.result_store.verify_audit().ok


@pytest.mark.slow
def test_dialog_scores_a_labelled_folder_in_a_child_process(qtbot, tmp_path, monkeypatch) -> None:
    """The real ``pneumoview calibrate`` child with the demo model on a folder of real labelled images."""
    from data_support import shared_path

    from pneumoview.ui.analysis_process import EngineSpec
    from pneumoview.ui.calibration_dialog import calibrate_command_for

    monkeypatch.setenv("PNEUMOVIEW_HOME", str(tmp_path / "home"))
    source = shared_path("cxr-labelled")
    data = tmp_path / "labelled"
    rows = [line.split(",")[:2] for line in (source / "labels.csv").read_text().splitlines()[1:]]
    for name, label in rows[:6] + rows[-6:]:  # 6 abnormal, 6 normal, as class folders (symlinks)
        folder = data / ("pneumoconiosis" if label == "abnormal" else "normal")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / Path(name).name).symlink_to(source / name)
    dialog = CalibrationDialog(bundle_fingerprint="", calibrate_command=calibrate_command_for(EngineSpec("demo")))
    qtbot.addWidget(dialog)
    with qtbot.waitSignal(dialog.scoringFinished, timeout=240000) as finished:
        dialog.run_scoring(data)
    assert finished.args[0] is True, finished.args
    assert dialog.calibration is not None and dialog.calibration.n == 12 and dialog.demo
    assert dialog.table.rowCount() >= 2 and "DEMO" in dialog.figures_label.text()
    assert not dialog.save_button.isEnabled()  # the demo's scores are not for the (empty) bundle in use


def _store_with_final_readings(path: Path, positives: list[bool]) -> Path:
    """A real results store: one image per study with a result of bundle FP (scores SCORES), two readers."""
    import hashlib

    from pneumoview.reading.ilo import Reading, normal_reading
    from pneumoview.reading.repository import ReadingRepository
    from pneumoview.results import ImageIdentity, Provenance, analysed
    from pneumoview.store import ImageInfo, ResultStore

    positive_reading = Reading(
        film_quality=1, profusion="2/2", primary_shape="p", secondary_shape="p", zones=frozenset({"RM", "LM"})
    )
    with ResultStore(path) as store:
        repo = ReadingRepository(store)
        a, b = repo.sign_in("Reader A"), repo.sign_in("Reader B")
        for i, (score, positive) in enumerate(zip(SCORES, positives, strict=True)):
            uid = f"1.2.3.{i}"
            identity = ImageIdentity(f"{uid}.1", hashlib.sha256(uid.encode()).hexdigest(), f"/x/{i}.dcm")
            info = ImageInfo(image_key=identity.key, path=identity.path, study_uid=uid, patient_id=f"W{i}")
            result = analysed(
                identity,
                score,
                class_names=("pneumoconiosis", "normal"),
                demo=False,
                provenance=Provenance(bundle_fingerprint=FP, threshold=0.5),
            )
            store.save(result, info)
            reading = positive_reading if positive else normal_reading()
            repo.submit(uid, a, reading)
            repo.submit(uid, b, reading)
    return path


def test_dialog_source_choice_final_readings_in_the_store(qtbot, tmp_path) -> None:
    saved = []
    db = _store_with_final_readings(tmp_path / "results.sqlite3", POSITIVE)
    points = OperatingPointStore(tmp_path / "op.json")
    dialog = CalibrationDialog(bundle_fingerprint=FP, bundle_id="m1", points=points, on_saved=saved.append, database=db)
    qtbot.addWidget(dialog)
    assert dialog.source() == "folder" and not dialog.score_button.isEnabled()  # no model command given
    dialog.source_combo.setCurrentIndex(1)
    assert dialog.source() == "store" and dialog.score_button.isEnabled()
    assert dialog.score_button.text() == "Use the final readings"
    with qtbot.waitSignal(dialog.scoringFinished) as finished:
        dialog.score_button.click()
    assert finished.args == [True, ""]
    dialog.target_spin.setValue(0.8)  # the same scores and labels as the JSON test: threshold 0.55
    text = dialog.figures_label.text()
    assert "n = 10 (5 pneumoconiosis, 5 normal)" in text and "Threshold 0.5500" in text and "AUC 0.800" in text
    assert "Source: final readings in the store" in text and dialog.save_button.isEnabled()
    dialog.save_button.click()
    assert saved[0].data_summary["source"] == "store" and saved[0].threshold == 0.55
    # Another bundle has no results in this store: a clear message, nothing to save.
    other = CalibrationDialog(bundle_fingerprint="d" * 64, points=points, database=db)
    qtbot.addWidget(other)
    other.source_combo.setCurrentIndex(1)
    with qtbot.waitSignal(other.scoringFinished) as refused:
        other.score_button.click()
    assert refused.args[0] is False and "0 studies with a final reading" in other.figures_label.text()
    assert not other.save_button.isEnabled()


def test_dialog_store_with_one_class_only_says_so(qtbot, tmp_path) -> None:
    db = _store_with_final_readings(tmp_path / "results.sqlite3", [False] * len(SCORES))
    dialog = CalibrationDialog(bundle_fingerprint=FP, database=db)
    qtbot.addWidget(dialog)
    dialog.source_combo.setCurrentIndex(1)
    assert not dialog.load_from_store()
    assert "one class only" in dialog.figures_label.text() and not dialog.save_button.isEnabled()
