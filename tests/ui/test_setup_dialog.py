"""Model Setup: full bundle validation without torch, demo-base bundles, reference checkpoint import."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
from bundle_support import make_tiny_bundle, reference_tensors, replace_tensors, save_reference_checkpoint

from pneumoview.registry import ModelRegistry
from pneumoview.settings import Settings
from pneumoview.ui.setup_dialog import ModelSetupDialog


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PNEUMOVIEW_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def base(tmp_path: Path) -> Settings:
    clip = tmp_path / "clip.pt"
    clip.write_bytes(b"x")
    return Settings(clip_path=str(clip), llama_path=str(tmp_path))


def open_setup(qtbot, settings: Settings) -> ModelSetupDialog:
    dialog = ModelSetupDialog(settings)
    qtbot.addWidget(dialog)
    return dialog


def test_a_bundle_with_non_finite_weights_is_refused_before_loading(qtbot, tmp_path: Path, base: Settings) -> None:
    from safetensors.torch import load_file

    bundle = make_tiny_bundle(tmp_path / "b")
    tensors = load_file(str(bundle / "weights.safetensors"))
    tensors["engine.linear1.bias"][0] = float("nan")
    replace_tensors(bundle, tensors)
    base.active_bundle = str(bundle)
    dialog = open_setup(qtbot, base)
    assert not dialog.check()
    text = dialog.message.text()
    assert text.startswith("The bundle is not valid.") and "NaN or infinite" in text and "engine.linear1.bias" in text
    dialog.save_button.click()
    assert dialog.result() != dialog.DialogCode.Accepted


def test_a_bundle_trained_on_the_demo_base_needs_no_base_weights(qtbot, tmp_path: Path) -> None:
    registry = ModelRegistry()
    registry.activate(registry.add(make_tiny_bundle(tmp_path / "b", demo=True)).id)
    dialog = open_setup(qtbot, Settings())
    assert dialog.check(), dialog.message.text()


@pytest.mark.slow
def test_import_reference_registers_and_activates(qtbot, tmp_path: Path, base: Settings) -> None:
    from pneumoview.inference.config import FULL_CONFIG, load_config

    checkpoint = save_reference_checkpoint(
        tmp_path / "checkpoint-best.pth", reference_tensors(load_config(FULL_CONFIG), seed=2)
    )
    base.active_bundle = str(tmp_path / "old-explicit-bundle")
    dialog = open_setup(qtbot, base)
    with qtbot.waitSignal(dialog.modelActivated, timeout=180_000) as signal:
        dialog.import_reference(str(checkpoint))
    entry = ModelRegistry().active()
    assert entry is not None and signal.args == [entry.id]
    assert entry.architecture == "pneumollm-vitl14-llama7b" and entry.manifest["training"]["epoch"] == 41
    assert dialog.bundle_edit.text() == ""  # the registry's active bundle: the one imported
    assert f"Imported and activated as {entry.id}" in dialog.message.text()
    assert dialog.result_settings().active_bundle is None


class _Payload:
    def __reduce__(self):
        return (os.system, ("true",))


@pytest.mark.slow
def test_import_reference_refuses_code_in_plain_words(qtbot, tmp_path: Path, base: Settings) -> None:
    import torch

    from pneumoview.inference.config import TINY_CONFIG, load_config

    evil = tmp_path / "evil.pth"
    torch.save(
        {"model": reference_tensors(load_config(TINY_CONFIG)), "args": argparse.Namespace(), "extra": _Payload()}, evil
    )
    dialog = open_setup(qtbot, base)
    dialog.import_reference(str(evil))
    qtbot.waitUntil(lambda: dialog.import_button.isEnabled(), timeout=180_000)
    text = dialog.message.text()
    assert text.startswith("The checkpoint was not imported.\nthis file contains code, PneumoView will not load it")
    assert "weights_only" not in text and ModelRegistry().list() == []
