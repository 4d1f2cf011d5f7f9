"""Side panels with real session entries (real scan of RG1 / CT) and hand-made results."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from pydicom.data import get_testdata_file

from pneumoview.dicom.scan import scan
from pneumoview.labels import DEMO_MARK
from pneumoview.results import Provenance, analysed
from pneumoview.session import ImageEntry, ReviewSession
from pneumoview.ui.panels import DiagnosisPanel, ModelInputPanel, ReviewPanel


def _entries(tmp_path: Path, rg1: Path) -> dict[str, object]:
    folder = tmp_path / "in"
    folder.mkdir()
    os.symlink(rg1, folder / "RG1_UNCR.dcm")
    os.symlink(get_testdata_file("CT_small.dcm"), folder / "CT_small.dcm")
    session = ReviewSession()
    session.add_scan(scan([folder]))
    return {e.path.name: e for e in session.entries.values()}


def _result(entry: ImageEntry, p: float, *, demo: bool, name: str, threshold: float = 0.5):  # noqa: ANN202
    assert entry.identity is not None
    return analysed(
        entry.identity,
        p,
        class_names=("pneumoconiosis", "normal"),
        demo=demo,
        provenance=Provenance(
            bundle_id="m1",
            bundle_name=name,
            bundle_fingerprint="ab" * 32,
            threshold=threshold,
            device="cpu",
            plan="cpu fp32",
            base_fingerprints={"clip": "cd" * 32},
        ),
    )


def test_diagnosis_panel_shows_the_judged_label_and_marks_demo(
    qtbot,
    tmp_path: Path,  # noqa: ANN001
    rg1_uncompressed: Path,
) -> None:
    entries = _entries(tmp_path, rg1_uncompressed)
    rg1, ct = entries["RG1_UNCR.dcm"], entries["CT_small.dcm"]
    panel = DiagnosisPanel()
    qtbot.addWidget(panel)
    panel.show()
    panel.show_entry(ct)
    assert panel.headline.text() == "Not analysable: unsupported-modality"
    rg1.result = _result(rg1, 0.62, demo=True, name="DEMO tiny")
    panel.show_entry(rg1)
    assert panel.demo_mark.isVisible() and panel.demo_mark.text() == DEMO_MARK
    # The answer first: the score, the DEMO-marked label at its threshold; provenance collapsed.
    assert panel.probability.text() == "0.620"
    assert f"{DEMO_MARK}: pneumoconiosis" in panel.answer.text() and "threshold 0.50" in panel.answer.text()
    details = panel.details.text()
    assert "abababababababab" in details and "cpu fp32" in details and "cdcdcdcd" in details
    assert not panel.details.isVisible() and panel.expander.isVisible() and not panel.expander.isChecked()
    panel.expander.click()
    assert panel.details.isVisible()
    panel.expander.click()
    assert not panel.details.isVisible()
    # Another threshold in the settings does not relabel the stored result (a decision is bound to
    # what it judged); the card says what the new threshold would give.
    panel.threshold = 0.7
    panel.show_entry(rg1)
    assert f"{DEMO_MARK}: pneumoconiosis" in panel.answer.text()
    assert "at the current threshold 0.70 it would be normal" in panel.answer.text()
    rg1.result = _result(rg1, 0.3, demo=False, name="real model")
    panel.show_entry(rg1)
    assert not panel.demo_mark.isVisible() and DEMO_MARK not in panel.headline.text()


def test_model_input_panel_warns_on_fallback(qtbot) -> None:  # noqa: ANN001
    panel = ModelInputPanel()
    qtbot.addWidget(panel)
    panel.show()
    crop = np.linspace(0, 1, 224 * 224, dtype=np.float32).reshape(224, 224)
    note = "MONOCHROME1 (0028,0004): grey levels mapped so that bone is white, as the file asks"
    panel.show_input(crop, fallback=False, notes=[note])
    assert panel.image.pixmap().width() == 224 and not panel.warning.isVisible()
    image = panel.image.pixmap().toImage()
    assert image.pixelColor(0, 0).value() == 0 and image.pixelColor(223, 223).value() == 255
    panel.show_input(crop, fallback=True)
    assert panel.warning.isVisible() and "whole image" in panel.warning.text()


def test_review_panel_requests_a_decision(qtbot, tmp_path: Path, rg1_uncompressed: Path) -> None:  # noqa: ANN001
    from pneumoview.session import Decision

    rg1 = _entries(tmp_path, rg1_uncompressed)["RG1_UNCR.dcm"]
    panel = ReviewPanel()
    qtbot.addWidget(panel)
    panel.show_entry(None)
    assert not panel.save_button.isEnabled()
    panel.show_entry(rg1)
    panel.save_button.click()  # nothing chosen: asks first, emits nothing
    assert "Choose" in panel.saved.text()
    panel.buttons["uncertain"].click()
    panel.comment.setPlainText("  faint opacities  ")
    panel.whole_study.setChecked(True)
    with qtbot.waitSignal(panel.decisionRequested, timeout=1000) as blocker:
        panel.save_button.click()
    assert blocker.args == ["uncertain", "faint opacities", True]
    rg1.decision = Decision("agree", "ok", "Dr C", "2026-11-27T21:00:00+00:00")
    panel.show_entry(rg1)
    assert panel.buttons["agree"].isChecked() and not panel.buttons["uncertain"].isChecked()
    assert panel.comment.toPlainText() == "ok" and "Dr C" in panel.saved.text()


def test_result_card_and_status_text_mark_an_image_below_the_quality_gate(
    qtbot,
    tmp_path: Path,  # noqa: ANN001
    rg1_uncompressed: Path,
) -> None:
    from dataclasses import replace

    rg1 = _entries(tmp_path, rg1_uncompressed)["RG1_UNCR.dcm"]
    panel = DiagnosisPanel()
    qtbot.addWidget(panel)
    base = _result(rg1, 0.7, demo=False, name="m")
    rg1.result = replace(base, quality_codes=("pixel-spacing-coarse", "ap-view"), below_quality_gate=True)
    panel.show_entry(rg1)
    assert "BELOW THE GATE</b> (pixel-spacing-coarse, ap-view)" in panel.answer.text()
    assert panel.probability.text().startswith("0.700")  # the result is shown, not dropped
    assert rg1.status_text() == "analysed (below quality gate)"
    rg1.result = replace(base, quality_codes=("pixel-spacing-unknown",), below_quality_gate=False)
    panel.show_entry(rg1)
    assert "passed (caution: pixel-spacing-unknown)" in panel.answer.text()
    assert rg1.status_text() == "analysed"
    rg1.result = base  # graded before the gate existed: no quality row at all
    panel.show_entry(rg1)
    assert "Image quality" not in panel.answer.text()


def test_tab_leaves_the_decision_comment_box(qtbot) -> None:  # noqa: ANN001
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    panel = ReviewPanel()
    qtbot.addWidget(panel)
    panel.show()
    qtbot.waitExposed(panel)
    panel.activateWindow()
    panel.show_entry(None)
    panel.comment.setEnabled(True)
    panel.whole_study.setEnabled(True)
    panel.comment.setFocus()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is panel.comment)
    QTest.keyClicks(panel.comment, "ok")
    QTest.keyClick(panel.comment, Qt.Key.Key_Tab)
    assert panel.comment.toPlainText() == "ok" and QApplication.focusWidget() is not panel.comment
