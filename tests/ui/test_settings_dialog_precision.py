"""Settings dialog: the precision / quantisation pickers offer the one vocabulary, and every value validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from pneumoview.precision import Precision, Quantisation, choices
from pneumoview.settings import Settings
from pneumoview.ui.settings_dialog import SettingsDialog


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PNEUMOVIEW_HOME", str(tmp_path / "home"))


def items(combo) -> list[str]:
    return [combo.itemText(i) for i in range(combo.count())]


def test_pickers_offer_the_vocabulary_and_every_value_is_saved_valid(qtbot) -> None:
    dialog = SettingsDialog(Settings(quantisation="int8", model_idle_minutes=5))
    qtbot.addWidget(dialog)
    assert items(dialog.precision_combo) == choices(Precision)
    assert items(dialog.quantisation_combo) == choices(Quantisation)
    assert dialog.quantisation_combo.currentText() == "int8" and dialog.idle_spin.value() == 5
    for precision in items(dialog.precision_combo):
        for quantisation in items(dialog.quantisation_combo):
            dialog.precision_combo.setCurrentText(precision)
            dialog.quantisation_combo.setCurrentText(quantisation)
            result = dialog.result_settings()
            result.validate()
            assert (result.precision, result.quantisation) == (precision, quantisation)
    dialog.idle_spin.setValue(0)
    assert dialog.result_settings().model_idle_minutes == 0 and dialog.idle_spin.text() == "never"


def test_apples_gpu_is_offered_only_what_runs_there(qtbot) -> None:
    dialog = SettingsDialog(Settings(quantisation="int4"))
    qtbot.addWidget(dialog)
    dialog.device_combo.setCurrentText("mps")
    assert items(dialog.quantisation_combo) == ["auto", "none"]
    assert dialog.result_settings().quantisation == "auto"
    dialog.device_combo.setCurrentText("cpu")
    assert items(dialog.quantisation_combo) == choices(Quantisation)
