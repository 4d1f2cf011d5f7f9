"""Activation that works: whatever is active is resolved afresh when an analysis starts.

Real registry, real bundles trained on the demo base weights (so they run without CLIP/LLaMA
files), the real analysis child process. Regressions of: "Activate" in the wizard reporting
success while the next analysis used the old model; "No model is installed" after a restart
although the registry had an active bundle; the demo choice forgotten on restart; "Use demo
model" from the Analyse prompt not starting the analysis; `pneumoview models activate` in another
process not reaching the open window.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from bundle_support import make_demo_trained_bundle
from PySide6.QtWidgets import QPushButton

from pneumoview.inference.demo import DEMO_MODEL_ID
from pneumoview.registry import ModelRegistry
from pneumoview.settings import Settings, save_settings
from pneumoview.ui.main_window import MainWindow

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model generated once for the module (deterministic: the same files every time)."""
    from pneumoview.inference.demo import default_demo_dir, ensure_demo_model

    root = tmp_path_factory.mktemp("demo-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PNEUMOVIEW_HOME", str(root))
        return ensure_demo_model(default_demo_dir()).root


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, demo_cache: Path) -> Path:
    monkeypatch.setenv("PNEUMOVIEW_HOME", str(tmp_path / "home"))
    save_settings(Settings(reviewer_name="Dr Test"))
    (tmp_path / "home" / "cache").mkdir(parents=True)
    (tmp_path / "home" / "cache" / demo_cache.name).symlink_to(demo_cache, target_is_directory=True)
    return tmp_path / "home"


@pytest.fixture()
def folder(tmp_path: Path, rg1_uncompressed: Path) -> Path:
    folder = tmp_path / "incoming"
    folder.mkdir()
    os.symlink(rg1_uncompressed, folder / "RG1_UNCR.dcm")
    return folder


@pytest.fixture()
def two_models(tmp_path: Path, home: Path) -> tuple[str, str]:
    registry = ModelRegistry()
    first = registry.add(make_demo_trained_bundle(tmp_path / "first", model_id="first-model", seed=1))
    second = registry.add(make_demo_trained_bundle(tmp_path / "second", model_id="second-model", seed=2))
    return first.id, second.id


def open_window(qtbot, folder: Path) -> MainWindow:
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignal(window.scanFinished, timeout=60_000):
        window.open_paths([folder])
    return window


def analysed_with(qtbot, window: MainWindow) -> str:
    """Analyse the one image; the model id the analysis process loaded for it."""
    with qtbot.waitSignal(window.analysisFinished, timeout=240_000):
        assert window.analyse(list(window.session.entries)) is not None
    return str(window.analysis_client.loaded["model_id"])


def close(window: MainWindow) -> None:
    window.close()


def test_wizard_activation_is_used_by_the_next_analysis_and_after_a_restart(
    qtbot, folder: Path, two_models: tuple[str, str]
) -> None:
    first, second = two_models
    ModelRegistry().activate(first)
    window = open_window(qtbot, folder)
    assert not window.diagnosis.no_model.isVisible()
    assert analysed_with(qtbot, window) == "first-model"
    # The wizard's own activate call (its results page, as Finish runs it).
    window.open_retrain_wizard()
    wizard = window._wizard
    wizard.train_page.result = {"registry_id": second}
    wizard.results_page.activate.setChecked(True)
    with qtbot.waitSignal(wizard.modelActivated, timeout=5000):
        assert wizard.results_page.validatePage()
    wizard.close()
    assert analysed_with(qtbot, window) == "second-model"
    close(window)
    restarted = open_window(qtbot, folder)  # a restart finds the registry's active model
    assert not restarted.diagnosis.no_model.isVisible()
    assert analysed_with(qtbot, restarted) == "second-model"
    close(restarted)


def test_cli_activation_in_another_process_reaches_the_open_window(
    qtbot, folder: Path, two_models: tuple[str, str]
) -> None:
    first, second = two_models
    ModelRegistry().activate(first)
    window = open_window(qtbot, folder)
    assert analysed_with(qtbot, window) == "first-model"
    for argv, expected in (
        (["activate", second], "second-model"),
        (["rollback"], "first-model"),
        (["use-demo"], DEMO_MODEL_ID),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "pneumoview", "models", *argv],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert analysed_with(qtbot, window) == expected
    close(window)


def test_use_demo_model_from_the_prompt_starts_the_analysis_and_survives_a_restart(
    qtbot, folder: Path, home: Path
) -> None:
    window = open_window(qtbot, folder)
    assert window.analyse_all() is None  # no model: the prompt
    box = window._no_model_box
    demo = next(b for b in box.findChildren(QPushButton) if b.text() == "Use demo model")
    with qtbot.waitSignal(window.analysisFinished, timeout=240_000) as finished:
        demo.click()
    assert finished.args == [1] and window.analysis_client.loaded["model_id"] == DEMO_MODEL_ID
    assert ModelRegistry().demo_chosen()
    close(window)
    restarted = open_window(qtbot, folder)  # the demo choice is remembered
    assert not restarted.diagnosis.no_model.isVisible()
    assert analysed_with(qtbot, restarted) == DEMO_MODEL_ID
    assert restarted.session.entries[next(iter(restarted.session.entries))].result.demo
    close(restarted)


def test_an_active_bundle_without_base_weights_says_so(qtbot, folder: Path, home: Path, tmp_path: Path) -> None:
    from bundle_support import make_tiny_bundle

    registry = ModelRegistry()
    registry.activate(registry.add(make_tiny_bundle(tmp_path / "real", model_id="real", name="clinic model")).id)
    window = open_window(qtbot, folder)
    assert window.analyse_all() is None
    text = window._no_model_box.text()
    assert "The active model cannot run yet: the model 'clinic model' needs the CLIP ViT-L/14" in text
    window._no_model_box.close()
    close(window)
