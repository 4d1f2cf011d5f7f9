"""Settings, model setup and export dialogs, offscreen, with the real settings / registry modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from pneumoview.errors import FingerprintMismatchError, InsufficientMemoryError, WeightsError
from pneumoview.settings import Settings, load_settings
from pneumoview.ui.export_dialog import ExportDialog
from pneumoview.ui.settings_dialog import REGISTRY_CHOICE, SettingsDialog
from pneumoview.ui.setup_dialog import ModelSetupDialog, check_paths, explain


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PNEUMOVIEW_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_settings_dialog_edits_a_copy_and_validates(qtbot) -> None:  # noqa: ANN001
    original = Settings(reviewer_name="A", threshold=0.5)
    dialog = SettingsDialog(original)
    qtbot.addWidget(dialog)
    assert dialog.bundle_combo.currentText() == REGISTRY_CHOICE
    dialog.reviewer_edit.setText("  Dr B  ")
    dialog.threshold_spin.setValue(0.37)
    dialog.device_combo.setCurrentText("cpu")
    dialog.delimiter_combo.setCurrentIndex(dialog.delimiter_combo.findData(";"))
    dialog.names_check.setChecked(True)
    result = dialog.result_settings()
    assert (result.reviewer_name, result.threshold, result.device) == ("Dr B", 0.37, "cpu")
    assert result.export.delimiter == ";" and result.export.include_names
    assert result.active_bundle is None
    assert original.reviewer_name == "A" and original.export.delimiter == ","  # untouched
    dialog.accept()
    assert dialog.result() == dialog.DialogCode.Accepted


def test_setup_dialog_says_what_is_wrong(qtbot, tmp_path: Path) -> None:  # noqa: ANN001
    problems = check_paths("", str(tmp_path / "missing-llama"), str(tmp_path))
    assert problems[0].startswith("CLIP weights: choose")
    assert "no such folder" in problems[1]
    assert problems[2].startswith("The bundle is not valid.")  # tmp_path has no manifest.json
    assert explain(FingerprintMismatchError("clip differs")).startswith("Fingerprint mismatch")
    assert explain(InsufficientMemoryError("needs 14 GB")).startswith("Not enough memory")
    assert explain(WeightsError("not a ViT-L/14", path="/w.pt")).splitlines()[1] == "not a ViT-L/14 (/w.pt)"
    clip = tmp_path / "clip.pt"
    clip.write_bytes(b"x")
    dialog = ModelSetupDialog(Settings(clip_path=str(clip), llama_path=str(tmp_path)))
    qtbot.addWidget(dialog)
    assert not dialog.check()  # no bundle, empty registry
    assert "no active bundle" in dialog.message.text()
    with qtbot.waitSignal(dialog.demoRequested, timeout=1000):
        dialog.demo_button.click()


def test_export_dialog_creates_and_keeps_the_pseudonymisation_key(qtbot) -> None:  # noqa: ANN001
    settings = Settings()
    dialog = ExportDialog(None, settings, selected_count=3)
    qtbot.addWidget(dialog)
    assert dialog.windowTitle() == "Export selected images to CSV"
    assert dialog.target_path().suffix == ".csv"
    dialog.pseudonymise.setChecked(True)
    options = dialog.options()
    assert options.pseudonymise and len(options.key) == 32
    assert load_settings().pseudonymise_key == options.key.hex()  # saved: same pseudonyms next time
    again = ExportDialog(None, settings).options()
    assert again.key == options.key
