"""The retraining wizard, offscreen, driving a real ``python -m training`` child process."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("PySide6")

from PySide6.QtWidgets import QWizard  # noqa: E402

from pneumoview.registry import ModelRegistry  # noqa: E402
from pneumoview.ui.wizard import RetrainWizard  # noqa: E402


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
        extra_args=[
            "--threads",
            "1",
            "--batch-size",
            "4",
            "--grad-accum",
            "1",
            "--lr",
            "2e-3",
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
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


def _demo_weights(tmp_path: Path) -> tuple[Path, Path]:
    """Files marked as the demo model's base weights, exactly as ``inference.demo`` marks them."""
    import json

    from safetensors.numpy import save_file

    clip = tmp_path / "clip-visual-demo.safetensors"
    save_file({"visual.x": __import__("numpy").zeros(2, dtype="float32")}, str(clip), metadata={"pneumoview_demo": "1"})
    llama = tmp_path / "llama-demo"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama", "pneumoview_demo": True}))
    return clip, llama


def test_demo_weights_in_the_settings_are_never_the_base_of_a_full_size_run(  # type: ignore[no-untyped-def]
    qtbot, tmp_path: Path
) -> None:
    from pneumoview.settings import Settings

    clip, llama = _demo_weights(tmp_path)
    wiz = RetrainWizard(
        None,
        settings=Settings(clip_path=str(clip), llama_path=str(llama)),
        registry=ModelRegistry(tmp_path / "registry"),
        runs_dir=tmp_path / "runs",
    )
    qtbot.addWidget(wiz)
    page = wiz.data_page
    assert not page.base_real.isEnabled() and page.base_demo.isChecked()
    assert "demo model's weights" in page.base_real.text()
    page.base_real.setChecked(True)  # even if forced, the child is started with --demo, never the full architecture
    assert wiz.base_arguments() == ["--demo"]
    # Real (unmarked) files are offered and preselected.
    real_clip = tmp_path / "ViT-L-14.safetensors"
    from safetensors.numpy import save_file

    save_file({"visual.x": __import__("numpy").zeros(2, dtype="float32")}, str(real_clip))
    real_llama = tmp_path / "llama-7b"
    real_llama.mkdir()
    (real_llama / "config.json").write_text('{"model_type": "llama"}')
    wiz2 = RetrainWizard(
        None,
        settings=Settings(clip_path=str(real_clip), llama_path=str(real_llama)),
        registry=ModelRegistry(tmp_path / "registry"),
        runs_dir=tmp_path / "runs",
    )
    qtbot.addWidget(wiz2)
    assert wiz2.data_page.base_real.isEnabled() and wiz2.data_page.base_real.isChecked()
    assert wiz2.base_arguments() == ["--base-clip", str(real_clip), "--base-llama", str(real_llama)]


def test_a_run_larger_than_the_machine_asks_before_it_starts(  # type: ignore[no-untyped-def]
    qtbot, tmp_path: Path, monkeypatch
) -> None:
    from PySide6.QtWidgets import QMessageBox

    wiz = RetrainWizard(None, registry=ModelRegistry(tmp_path / "registry"), runs_dir=tmp_path / "runs")
    qtbot.addWidget(wiz)
    summary = wiz.summary_page
    # What the child sends in its "estimate" message (pneumoview.service.training.EstimateEvent).
    summary._on_event(
        {
            "event": "estimate",
            "device": "cuda",
            "devices": ["cpu", "cuda"],
            "cuda_available": True,
            "estimate": {
                "memory_gb": 30.0,
                "seconds": 60,
                "seconds_per_epoch": 1.0,
                "trainable_parameters": 10,
                "notes": "rough",
            },
            "estimates": {
                "cpu": {
                    "memory_gb": 8.0,
                    "seconds": 600,
                    "seconds_per_epoch": 10.0,
                    "trainable_parameters": 10,
                    "notes": "rough",
                },
                "cuda": {
                    "memory_gb": 30.0,
                    "seconds": 60,
                    "seconds_per_epoch": 1.0,
                    "trainable_parameters": 10,
                    "notes": "rough",
                },
            },
            "machine_memory_gb": {"cpu": 16.0, "cuda": 24.0},
        }
    )
    summary.summary = {"ok": True, "patients_per_class": [5, 5]}
    page = wiz.preset_page
    page.initializePage()
    asked: list[str] = []

    def answer(button: QMessageBox.StandardButton):  # type: ignore[no-untyped-def]
        return lambda *args, **kwargs: asked.append(args[2]) or button

    page.device.setCurrentIndex(page.device.findData("cuda"))
    assert "30.0 GB" in page.memory_warning.text() and "24.0 GB of GPU memory" in page.memory_warning.text()
    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.No))
    assert page.validatePage() is False and len(asked) == 1
    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.Yes))
    assert page.validatePage() is True
    page.device.setCurrentIndex(page.device.findData("cpu"))  # 8 GB on a 16 GB machine: no question
    assert page.memory_warning.text() == ""
    assert page.validatePage() is True and len(asked) == 2
