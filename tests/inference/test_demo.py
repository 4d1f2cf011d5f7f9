"""The demo model: generated on demand, deterministic, and marked DEMO everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from pneumoview.inference.bundle import load_bundle, read_manifest
from pneumoview.inference.demo import default_demo_dir, ensure_demo_model
from pneumoview.inference.engine import InferenceEngine
from pneumoview.inference.weights import read_clip_visual, read_llama_decoder
from pneumoview.labels import DEMO_MARK as DEMO_LABEL


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    return ensure_demo_model(tmp_path_factory.mktemp("a") / "demo")


def test_generation_is_deterministic(first, tmp_path):
    second = ensure_demo_model(tmp_path / "demo")
    m1, t1 = load_bundle(first.bundle)
    m2, t2 = load_bundle(second.bundle)
    assert m1.base_fingerprints == m2.base_fingerprints
    assert sorted(t1) == sorted(t2) and all(torch.equal(t1[k], t2[k]) for k in t1)
    for a, b in ((first.clip, second.clip), (first.llama / "model.safetensors", second.llama / "model.safetensors")):
        sa, sb = load_file(str(a)), load_file(str(b))
        assert sorted(sa) == sorted(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    # ... and does not disturb the caller's random stream
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    ensure_demo_model(tmp_path / "third")
    assert torch.equal(torch.rand(3), expected)


def test_every_part_is_marked_demo(first):
    manifest = read_manifest(first.bundle)
    assert manifest.demo is True and manifest.name.startswith("DEMO") and manifest.model_id.startswith("demo-")
    assert "not a diagnosis" in manifest.name
    with safe_open(str(first.clip), framework="pt") as f:
        assert f.metadata()["pneumoview_demo"] == "1"
    assert json.loads((first.llama / "config.json").read_text())["pneumoview_demo"] is True
    clip, llama = read_clip_visual(first.clip), read_llama_decoder(first.llama)
    assert clip.demo and llama.demo
    assert manifest.base_fingerprints == {"clip": clip.fingerprint, "llama": llama.fingerprint}
    assert manifest.architecture == "pneumollm-tiny"


def test_demo_engine_marks_every_prediction(first):
    engine = InferenceEngine.load_demo(first.root)
    crops = np.random.default_rng(0).random((3, 224, 224), dtype=np.float32)
    preds = engine.predict(crops)
    assert len(preds) == 3
    for pred in preds:
        assert pred.demo and pred.label.startswith(DEMO_LABEL) and pred.model_name.startswith("DEMO")
        assert 0.0 <= pred.probability <= 1.0


def test_existing_model_is_reused_and_an_incomplete_one_regenerated(first, tmp_path):
    root = tmp_path / "demo"
    paths = ensure_demo_model(root)
    stamp = paths.clip.stat().st_mtime_ns
    assert ensure_demo_model(root).clip.stat().st_mtime_ns == stamp  # reused, not rewritten
    (paths.bundle / "manifest.json").unlink()  # e.g. a crash long ago, or a user deleting files
    again = ensure_demo_model(root)
    assert read_manifest(again.bundle).demo
    assert read_manifest(again.bundle).base_fingerprints == read_manifest(first.bundle).base_fingerprints
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # no temporary folders left


def test_default_folder_follows_pneumoview_home(monkeypatch, tmp_path):
    monkeypatch.setenv("PNEUMOVIEW_HOME", str(tmp_path))
    assert default_demo_dir().parent == tmp_path / "cache"


@pytest.mark.parametrize("read_only", [False, True])
def test_demo_generation_on_a_full_or_read_only_disk_is_one_clear_error(tmp_path: Path, read_only: bool) -> None:
    from bundle_support import small_filesystem

    from pneumoview.errors import PneumoViewError

    with small_filesystem(tmp_path / "disk", size="64k", read_only=read_only) as disk:
        with pytest.raises(PneumoViewError) as info:
            ensure_demo_model(disk / "demo-model")
        assert info.value.reason.startswith("cannot write" if read_only else "disk full: ")
        assert str(disk / "demo-model") in info.value.reason
        assert list(disk.iterdir()) == []  # no partial folder, no temporary folder


def test_the_engine_refuses_a_non_finite_bundle_on_the_demo_base(first, tmp_path: Path) -> None:
    """Engine load runs the full bundle check: NaN weights never reach a prediction."""
    from bundle_support import make_demo_trained_bundle, replace_tensors
    from safetensors.torch import load_file

    from pneumoview.errors import BundleError
    from pneumoview.inference.engine import InferenceEngine

    bundle = make_demo_trained_bundle(tmp_path / "b", model_id="nan-model", demo_dir=first.root)
    tensors = load_file(str(bundle / "weights.safetensors"))
    tensors["head.fc.weight"][0, 0] = float("nan")
    replace_tensors(bundle, tensors)
    with pytest.raises(BundleError, match="NaN or infinite.*head.fc.weight"):
        InferenceEngine.load_demo(first.root, bundle=bundle)
