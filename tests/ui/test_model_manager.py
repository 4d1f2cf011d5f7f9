"""Model manager dialog, offscreen, on a real registry of real tiny bundles; CLI parity."""

from __future__ import annotations

from pathlib import Path

import pytest
from bundle_support import FINGERPRINTS, make_tiny_bundle
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from pneumoview.cli import main
from pneumoview.registry import ModelRegistry
from pneumoview.ui.model_manager import (
    ACTIVE_MARK,
    COL_ACTIVE,
    COL_ADDED,
    COL_BASE,
    COL_DEMO,
    COL_ID,
    COL_METRICS,
    COL_NAME,
    DEMO_TAG,
    ModelManagerDialog,
)


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelRegistry:
    monkeypatch.setenv("PNEUMOVIEW_HOME", str(tmp_path / "home"))
    return ModelRegistry()


@pytest.fixture
def three(tmp_path: Path, registry: ModelRegistry) -> list[str]:
    ids = [
        registry.add(make_tiny_bundle(tmp_path / "a", seed=1, model_id="a", metrics={"auc": 0.812})).id,
        registry.add(make_tiny_bundle(tmp_path / "b", seed=2, model_id="b", metrics={"auc": 0.9})).id,
        registry.add(make_tiny_bundle(tmp_path / "c", seed=3, model_id="c", demo=True)).id,
    ]
    registry.activate(ids[0])
    return ids


def open_manager(qtbot, **kwargs) -> ModelManagerDialog:
    dialog = ModelManagerDialog(None, confirm=lambda _text: True, **kwargs)
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog


def active_rows(dialog: ModelManagerDialog) -> list[str]:
    return [row[COL_ID] for row in dialog.row_texts() if row[COL_ACTIVE] == ACTIVE_MARK]


def test_lists_bundles_with_date_metrics_demo_tag_and_fingerprints(qtbot, three: list[str]) -> None:
    dialog = open_manager(qtbot)
    rows = dialog.row_texts()
    assert [r[COL_ID] for r in rows] == three
    assert active_rows(dialog) == [three[0]]
    assert rows[0][COL_NAME] == "tiny a" and rows[0][COL_METRICS] == "auc=0.812"
    assert rows[0][COL_ADDED][:4].isdigit() and "T" not in rows[0][COL_ADDED]
    assert [r[COL_DEMO] for r in rows] == ["", "", DEMO_TAG]
    assert rows[1][COL_BASE] == f"clip {FINGERPRINTS['clip'][:12]}, llama {FINGERPRINTS['llama'][:12]}"
    assert rows[2][COL_METRICS] == "-"
    assert not dialog.demo_note.isVisible()


def test_activate_rollback_remove_match_the_cli(
    qtbot, three: list[str], registry: ModelRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    dialog = open_manager(qtbot)
    assert dialog.select_id(three[1])
    assert dialog.activate_button.isEnabled() and dialog.remove_button.isEnabled()
    with qtbot.waitSignal(dialog.modelActivated, timeout=1000) as signal:
        dialog.activate_button.click()
    assert signal.args == [three[1]] and active_rows(dialog) == [three[1]]
    assert main(["models", "list"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith(f"* {three[1]}")  # the CLI sees the same
    assert not dialog.remove_button.isEnabled()  # the active one cannot be removed
    assert dialog.rollback_button.isEnabled()
    with qtbot.waitSignal(dialog.modelActivated, timeout=1000) as signal:
        dialog.rollback_button.click()
    assert signal.args == [three[0]] and registry.active_id() == three[0] and active_rows(dialog) == [three[0]]
    assert not dialog.rollback_button.isEnabled()  # history is empty again
    dialog.select_id(three[2])
    dialog.remove_button.click()
    assert [e.id for e in registry.list()] == three[:2] and "Removed" in dialog.message.text()
    # a change made elsewhere (the CLI) shows after Refresh
    assert main(["models", "activate", three[1]]) == 0
    dialog.refresh_button.click()
    assert active_rows(dialog) == [three[1]]


def test_errors_show_in_the_dialog(qtbot, three: list[str], registry: ModelRegistry) -> None:
    dialog = open_manager(qtbot)
    dialog.select_id(three[0])
    dialog.remove_selected()  # the active one: refused, said plainly
    assert "is active" in dialog.message.text() and len(registry.list()) == 3
    dialog.rollback()
    assert "no earlier model" in dialog.message.text()


def test_the_demo_choice_is_shown_and_activation_leaves_it(qtbot, three: list[str], registry: ModelRegistry) -> None:
    registry.use_demo()
    dialog = open_manager(qtbot)
    assert dialog.demo_note.isVisible() and "demo model is in use" in dialog.demo_note.text()
    dialog.select_id(three[0])
    assert dialog.activate_button.isEnabled()  # re-activating the active bundle leaves the demo
    dialog.activate_button.click()
    assert not registry.demo_chosen() and not dialog.demo_note.isVisible()


def test_reachable_from_the_model_menu(qtbot, three: list[str], tmp_path: Path) -> None:
    from pneumoview.settings import Settings, save_settings
    from pneumoview.ui.main_window import MainWindow

    save_settings(Settings(reviewer_name="Dr Test"))
    window = MainWindow()
    qtbot.addWidget(window)
    model_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Model")
    assert window.act_models in model_menu.actions() and window.act_rollback in model_menu.actions()
    seen: list[list[list[str]]] = []

    def close_it() -> None:
        dialog = QApplication.activeModalWidget()
        if isinstance(dialog, ModelManagerDialog):
            seen.append(dialog.row_texts())
            dialog.reject()
        else:
            QTimer.singleShot(50, close_it)

    QTimer.singleShot(0, close_it)
    window.act_models.trigger()
    assert [r[COL_ID] for r in seen[0]] == three
    window.act_rollback.trigger()  # nothing to roll back to: said plainly, not a crash
    assert window.status_label.text().startswith("Cannot roll back: no earlier model")


def test_rollback_from_the_app_clears_an_explicit_bundle_folder(
    qtbot, three: list[str], registry: ModelRegistry, tmp_path: Path
) -> None:
    from pneumoview.settings import Settings, load_settings, save_settings
    from pneumoview.ui.main_window import MainWindow, model_configured

    registry.activate(three[1])
    save_settings(
        Settings(reviewer_name="Dr Test", clip_path="c", llama_path="l", active_bundle=str(tmp_path / "explicit"))
    )
    window = MainWindow()
    qtbot.addWidget(window)
    window.act_rollback.trigger()
    assert registry.active_id() == three[0]
    assert load_settings().active_bundle is None and window.settings.active_bundle is None  # the registry decides
    assert model_configured(window.settings)
    assert window.status_label.text() == f"Model {three[0]} is now active; the next analysis uses it."
