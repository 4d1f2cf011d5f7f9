"""The model registry: bundles copied never overwritten, activate / rollback / remove, torch-free listing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from pneumoview import paths
from pneumoview.errors import BundleError
from pneumoview.registry import ENTRY_FILE, STATE_FILE, ModelRegistry, check_safetensors_header, content_sha256

REPO_ROOT = Path(__file__).resolve().parents[1]


def make_bundle(folder: Path, *, seed: int = 0, model_id: str = "run", metrics: dict | None = None, demo: bool = False) -> Path:
    """A bundle as inference.bundle writes it (manifest.json + weights.safetensors), built with numpy."""
    import hashlib

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    save_file({"head.weight": rng.standard_normal((2, 8)).astype(np.float32),
               "engine.tokens": rng.standard_normal((4, 8)).astype(np.float32)}, str(folder / "weights.safetensors"))
    manifest = {
        "architecture": "pneumollm-tiny", "config": {}, "preprocessing": {"image_size": 224},
        "class_names": ["pneumoconiosis", "normal"], "base_fingerprints": {"clip": "c", "llama": "l"},
        "training": {"metrics": metrics or {}}, "app_version": "0.1.0", "created": "2026-11-27T21:00:00+00:00",
        "model_id": model_id, "name": f"tiny {model_id}", "demo": demo, "format_version": 1,
        "weights_file": "weights.safetensors",
        "weights_sha256": hashlib.sha256((folder / "weights.safetensors").read_bytes()).hexdigest(),
    }
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry")


def test_default_root_follows_pneumoview_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path))
    assert ModelRegistry().root == tmp_path / "data" / "models"


def test_add_copies_into_a_new_folder_and_never_overwrites(tmp_path: Path, registry: ModelRegistry) -> None:
    src = make_bundle(tmp_path / "b", model_id="run-1", metrics={"auc": 0.91})
    first = registry.add(src, source="training run 1")
    second = registry.add(src)  # the very same bundle again: a second, separate entry
    assert first.id != second.id
    assert first.path.parent == registry.bundles_dir and first.path != src
    assert (first.path / "weights.safetensors").read_bytes() == (src / "weights.safetensors").read_bytes()
    assert first.content_sha256 == content_sha256(src)
    assert first.source == "training run 1" and second.source == str(src.resolve())
    assert first.model_id == "run-1" and first.name == "tiny run-1" and first.metrics == {"auc": 0.91}
    assert first.id.endswith(first.content_sha256[:8]) and "run-1" in first.id
    assert [e.id for e in registry.list()] == [first.id, second.id]
    assert registry.active() is None  # adding never activates
    assert not list(registry.bundles_dir.glob(".*"))  # no temporary folders left
    assert not (src / ENTRY_FILE).exists()  # the source is untouched


def test_activate_and_rollback_keep_a_history(tmp_path: Path, registry: ModelRegistry) -> None:
    a = registry.add(make_bundle(tmp_path / "a", seed=1, model_id="a"))
    b = registry.add(make_bundle(tmp_path / "b", seed=2, model_id="b"))
    c = registry.add(make_bundle(tmp_path / "c", seed=3, model_id="c"))
    with pytest.raises(BundleError, match="no earlier model"):
        registry.rollback()
    registry.activate(a.id)
    registry.activate(b.id)
    registry.activate(b.id)  # no-op: b does not go on its own history
    registry.activate(c.id)
    assert registry.active().id == c.id and registry.history() == [a.id, b.id]
    assert registry.rollback().id == b.id
    assert registry.rollback().id == a.id
    assert registry.active().id == a.id
    with pytest.raises(BundleError):
        registry.rollback()
    state = json.loads((registry.root / STATE_FILE).read_text(encoding="utf-8"))
    assert state == {"version": 1, "active": a.id, "history": []}
    # a fresh object on the same folder sees the same state (the app and the CLI share it)
    assert ModelRegistry(registry.root).active().id == a.id


def test_remove_refuses_the_active_bundle_and_cleans_history(tmp_path: Path, registry: ModelRegistry) -> None:
    a = registry.add(make_bundle(tmp_path / "a", seed=1))
    b = registry.add(make_bundle(tmp_path / "b", seed=2))
    registry.activate(a.id)
    registry.activate(b.id)
    with pytest.raises(BundleError, match="active"):
        registry.remove(b.id)
    registry.remove(a.id)
    assert [e.id for e in registry.list()] == [b.id] and not a.path.exists()
    assert registry.history() == []
    with pytest.raises(BundleError, match="no earlier model"):
        registry.rollback()
    with pytest.raises(BundleError, match="no model"):
        registry.get(a.id)


def test_rollback_skips_bundles_deleted_behind_its_back(tmp_path: Path, registry: ModelRegistry) -> None:
    import shutil

    a = registry.add(make_bundle(tmp_path / "a", seed=1))
    b = registry.add(make_bundle(tmp_path / "b", seed=2))
    c = registry.add(make_bundle(tmp_path / "c", seed=3))
    for e in (a, b, c):
        registry.activate(e.id)
    shutil.rmtree(b.path)
    assert registry.rollback().id == a.id


@pytest.mark.parametrize("damage", ["no-manifest", "bad-json", "no-tensors", "truncated", "sha-mismatch", "escape"])
def test_invalid_bundles_are_refused_and_leave_nothing(tmp_path: Path, registry: ModelRegistry, damage: str) -> None:
    src = make_bundle(tmp_path / "b")
    weights = src / "weights.safetensors"
    manifest = json.loads((src / "manifest.json").read_text(encoding="utf-8"))
    if damage == "no-manifest":
        (src / "manifest.json").unlink()
    elif damage == "bad-json":
        (src / "manifest.json").write_text("{", encoding="utf-8")
    elif damage == "no-tensors":
        weights.unlink()
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:-10])
    elif damage == "sha-mismatch":
        manifest["weights_sha256"] = "0" * 64
        (src / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    elif damage == "escape":
        manifest["weights_file"] = "../../etc/passwd"
        (src / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(BundleError):
        registry.add(src)
    assert registry.list() == []
    assert not registry.bundles_dir.exists() or not any(registry.bundles_dir.iterdir())


def test_safetensors_header_check_reads_real_files(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    save_file({"x": np.zeros((3, 5), np.float32)}, str(path), metadata={"k": "v"})
    header = check_safetensors_header(path)
    assert header["x"]["shape"] == [3, 5] and header["__metadata__"] == {"k": "v"}
    path.write_bytes(path.read_bytes() + b"junk")
    with pytest.raises(BundleError, match="cover"):
        check_safetensors_header(path)


def test_compare_reports_metrics_side_by_side(tmp_path: Path, registry: ModelRegistry) -> None:
    a = registry.add(make_bundle(tmp_path / "a", seed=1, metrics={"auc": 0.9, "accuracy": 0.8}))
    b = registry.add(make_bundle(tmp_path / "b", seed=2, metrics={"auc": 0.93, "f1": 0.7}))
    assert registry.compare(a.id, b.id) == [("accuracy", 0.8, None), ("auc", 0.9, 0.93), ("f1", None, 0.7)]


def test_get_rejects_ids_that_are_paths(registry: ModelRegistry) -> None:
    for bad in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(BundleError):
            registry.get(bad)


def test_a_real_bundle_written_by_inference_bundle_round_trips(tmp_path: Path, registry: ModelRegistry) -> None:
    torch = pytest.importorskip("torch")
    from pneumoview.inference.bundle import Manifest, load_bundle, save_bundle
    from pneumoview.inference.config import load_config
    from pneumoview.inference.model import expected_trainable_shapes

    config = load_config("pneumollm-tiny")
    generator = torch.Generator().manual_seed(0)
    tensors = {k: torch.randn(shape, generator=generator) for k, shape in expected_trainable_shapes(config).items()}
    manifest = Manifest.create(config, base_fingerprints={"clip": "c" * 16, "llama": "l" * 16},
                               training={"metrics": {"auc": 0.75}})
    src = save_bundle(tmp_path / "bundle", tensors, manifest)
    entry = registry.add(src, source="test")
    registry.activate(entry.id)
    loaded_manifest, loaded = load_bundle(registry.active().path)
    assert loaded_manifest.model_id == manifest.model_id and entry.metrics == {"auc": 0.75}
    assert set(loaded) == set(tensors) and all(torch.equal(loaded[k], tensors[k]) for k in tensors)


def test_persistence_modules_import_without_torch_or_qt() -> None:
    code = (
        "import sys\n"
        "import pneumoview.settings, pneumoview.store, pneumoview.report, pneumoview.registry\n"
        "import pneumoview.commands.models, pneumoview.paths, pneumoview.labels\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'PySide6', 'transformers', 'open_clip'})\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
