"""The retraining wizard, offscreen, driving a real ``python -m training`` child process."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("PySide6")

from PySide6.QtWidgets import QWizard  # noqa: E402

from pneumoview.registry import ModelRegistry  # noqa: E402
from pneumoview.ui.wizard import JsonLineBuffer, RetrainWizard  # noqa: E402


def test_json_line_buffer_waits_for_whole_lines_and_keeps_junk_apart() -> None:
    buf = JsonLineBuffer()
    assert buf.feed(b'{"event": "sta') == []
    assert buf.feed(b'rt", "n": 1}\nnot json\n{"event": "epoch"}\n{"x"') == [{"event": "start", "n": 1}, {"event": "epoch"}]
    assert buf.junk == ["not json"]
    assert buf.feed(b": 2}\n") == [{"x": 2}]


@pytest.fixture()
def wizard(qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from training.synthetic import make_synthetic_dataset, small_config_file

    monkeypatch.setenv("PNEUMOVIEW_HOME", str(tmp_path / "home"))
    csv = make_synthetic_dataset(tmp_path / "syn", n_patients=6, images_per_patient=2, seed=4)
    cfg = small_config_file(tmp_path / "tiny64.json")
    wiz = RetrainWizard(
        None,
        registry=ModelRegistry(),
        base_args=["--random-base", "0", "--architecture", str(cfg)],
        extra_args=["--threads", "1", "--batch-size", "4", "--grad-accum", "1", "--lr", "2e-3",
                    "--cache-dir", str(tmp_path / "cache")],
        runs_dir=tmp_path / "runs",
    )
    qtbot.addWidget(wiz)
    wiz.show()
    wiz.data_page.path_edit.setText(str(csv))
    return wiz


def _to_training(qtbot, wiz: RetrainWizard, epochs: int) -> None:  # type: ignore[no-untyped-def]
    assert wiz.currentPage() is wiz.data_page and wiz.data_page.isComplete()
    wiz.next()
    qtbot.waitUntil(lambda: wiz.summary_page._done, timeout=120_000)
    assert wiz.summary_page.isComplete(), wiz.summary_page.text.toPlainText()
    text = wiz.summary_page.text.toPlainText()
    assert "pneumoconiosis" in text and "6 images" in text
    wiz.next()
    page = wiz.preset_page
    assert wiz.currentPage() is page
    page.quick.setChecked(True)
    assert page.folds.maximum() == 3  # 3 patients per class
    page.epochs.setValue(epochs)
    assert "Estimate: about" in page.estimate.text()
    wiz.next()
    assert wiz.currentPage() is wiz.train_page


@pytest.mark.slow
def test_wizard_trains_compares_and_activates(qtbot, wizard: RetrainWizard) -> None:  # type: ignore[no-untyped-def]
    _to_training(qtbot, wizard, epochs=2)
    page = wizard.train_page
    qtbot.waitUntil(lambda: page.exit_code is not None, timeout=180_000)
    assert page.exit_code == 0, page.status.text()
    assert page.isComplete()
    assert [len(c["loss"]) for c in page.curves.values()] == [2]  # one fold (quick check), two epochs
    assert page.ax_loss.lines and page.ax_auc.lines
    wizard.next()
    results = wizard.results_page
    assert wizard.currentPage() is results
    auc_cell = results.table.item(3, 0).text()
    assert "+/-" in auc_cell and float(auc_cell.split()[0]) >= 0
    assert "no active model" in results.note.text()
    new_id = page.result["registry_id"]
    assert [e.id for e in wizard.registry.list()] == [new_id]
    results.activate.setChecked(True)
    with qtbot.waitSignal(wizard.modelActivated, timeout=5000) as signal:
        wizard.button(QWizard.WizardButton.FinishButton).click()
    assert signal.args == [new_id]
    assert wizard.registry.active().id == new_id


@pytest.mark.slow
def test_wizard_cancel_stops_the_child_and_keeps_the_checkpoint(qtbot, wizard: RetrainWizard) -> None:  # type: ignore[no-untyped-def]
    _to_training(qtbot, wizard, epochs=200)
    page = wizard.train_page
    qtbot.waitUntil(lambda: bool(page.curves), timeout=180_000)
    page.cancel_button.click()
    qtbot.waitUntil(lambda: page.exit_code is not None, timeout=60_000)
    assert page.exit_code == 130
    assert "Cancelled" in page.status.text()
    assert not page.isComplete()
    work_dirs = list((wizard.runs_dir).glob("work-*"))
    assert len(work_dirs) == 1 and (work_dirs[0] / "checkpoint.safetensors").is_file()
    assert wizard.registry.list() == []


def test_training_child_command_from_an_install_and_from_the_frozen_app(qtbot, monkeypatch) -> None:
    """From an install the wizard runs ``python -m training``; in the frozen app, ``<app> train``."""
    import sys

    from pneumoview.ui.wizard import TrainingProcess

    proc = TrainingProcess()
    assert proc.command(["DATA"]) == (sys.executable, ["-m", "training", "DATA", "--json-progress"])
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert proc.command(["DATA"]) == (sys.executable, ["train", "DATA", "--json-progress"])
