"""Which model the next analysis uses: registry state + settings, read afresh (no Qt, no torch)."""

from __future__ import annotations

from pathlib import Path

import pytest
from bundle_support import make_tiny_bundle

from pneumoview.active_model import DEMO, resolve_active_model
from pneumoview.registry import ModelRegistry
from pneumoview.settings import Settings


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelRegistry:
    monkeypatch.setenv("PNEUMOVIEW_HOME", str(tmp_path / "home"))
    return ModelRegistry()


def test_nothing_installed_is_none(registry: ModelRegistry) -> None:
    assert resolve_active_model(Settings()) is None


def test_the_registry_is_read_afresh_each_time(tmp_path: Path, registry: ModelRegistry) -> None:
    settings = Settings(clip_path="/w/clip.pt", llama_path="/w/llama")
    a = registry.add(make_tiny_bundle(tmp_path / "a", seed=1, model_id="a"))
    b = registry.add(make_tiny_bundle(tmp_path / "b", seed=2, model_id="b"))
    ModelRegistry().activate(a.id)  # e.g. `pneumoview models activate` in another process
    first = resolve_active_model(settings)
    assert first is not None and first.ready and first.registry_id == a.id and first.bundle == a.path
    assert (first.kind, first.clip_path, first.llama_path) == ("bundle", "/w/clip.pt", "/w/llama")
    ModelRegistry().activate(b.id)
    assert resolve_active_model(settings).registry_id == b.id


def test_a_real_bundle_without_base_weights_says_what_is_missing(tmp_path: Path, registry: ModelRegistry) -> None:
    entry = registry.add(make_tiny_bundle(tmp_path / "a", model_id="a", name="clinic model"))
    registry.activate(entry.id)
    model = resolve_active_model(Settings())
    assert model is not None and not model.ready
    assert "'clinic model' needs the CLIP ViT-L/14 and LLaMA-7B base weights" in model.missing


def test_a_bundle_trained_on_the_demo_base_runs_on_it(tmp_path: Path, registry: ModelRegistry) -> None:
    entry = registry.add(make_tiny_bundle(tmp_path / "a", model_id="a", demo=True))
    registry.activate(entry.id)
    model = resolve_active_model(Settings())  # no base weights needed
    assert model is not None and model.ready and model.kind == DEMO and model.bundle == entry.path


def test_the_demo_choice_wins_until_a_bundle_is_activated(tmp_path: Path, registry: ModelRegistry) -> None:
    settings = Settings(clip_path="/w/clip.pt", llama_path="/w/llama", active_bundle=str(tmp_path / "explicit"))
    entry = registry.add(make_tiny_bundle(tmp_path / "a", model_id="a"))
    registry.use_demo()
    model = resolve_active_model(settings)
    assert model is not None and model.kind == DEMO and model.bundle is None and model.ready
    assert resolve_active_model(settings, include_demo_choice=False).bundle == tmp_path / "explicit"
    registry.activate(entry.id)
    settings.active_bundle = None
    assert resolve_active_model(settings).registry_id == entry.id


def test_an_explicit_bundle_folder_wins_over_the_registry(tmp_path: Path, registry: ModelRegistry) -> None:
    registry.activate(registry.add(make_tiny_bundle(tmp_path / "a", model_id="a")).id)
    explicit = make_tiny_bundle(tmp_path / "explicit", model_id="e")
    model = resolve_active_model(Settings(clip_path="c", llama_path="l", active_bundle=str(explicit)))
    assert model.bundle == explicit and model.registry_id is None
    broken = resolve_active_model(Settings(clip_path="c", llama_path="l", active_bundle=str(tmp_path / "gone")))
    assert broken is not None and not broken.ready and "manifest.json is missing" in broken.missing


def test_an_unreadable_registry_counts_as_empty(registry: ModelRegistry) -> None:
    registry.root.mkdir(parents=True)
    (registry.root / "registry.json").write_text("{not json", encoding="utf-8")
    assert resolve_active_model(Settings(clip_path="c", llama_path="l")) is None
