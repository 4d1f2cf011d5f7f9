"""The model registry: bundles copied never overwritten, activate / rollback / remove, torch-free listing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from bundle_support import make_tiny_bundle, replace_tensors, small_filesystem
from safetensors.numpy import save_file

from pneumoview import paths
from pneumoview.errors import BundleError
from pneumoview.registry import ENTRY_FILE, STATE_FILE, ModelRegistry, check_safetensors_header, content_sha256

REPO_ROOT = Path(__file__).resolve().parents[1]


def make_bundle(
    folder: Path, *, seed: int = 0, model_id: str = "run", metrics: dict | None = None, demo: bool = False
) -> Path:
    """A real tiny bundle (inference.bundle.save_bundle)."""
    return make_tiny_bundle(folder, seed=seed, model_id=model_id, metrics=metrics, demo=demo)


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
    assert state == {"version": 1, "active": a.id, "history": [], "demo": False}
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
    manifest = Manifest.create(
        config, base_fingerprints={"clip": "c" * 16, "llama": "l" * 16}, training={"metrics": {"auc": 0.75}}
    )
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
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("damage", ["wrong-shape", "nan", "inf", "no-sha", "swapped-classes", "nan-mean", "huge-size"])
def test_add_validates_the_tensors_and_manifest_fully(tmp_path: Path, registry: ModelRegistry, damage: str) -> None:
    from bundle_support import edit_manifest
    from safetensors.torch import load_file

    src = make_bundle(tmp_path / "b")
    tensors = load_file(str(src / "weights.safetensors"))
    manifest = json.loads((src / "manifest.json").read_text(encoding="utf-8"))
    if damage == "wrong-shape":
        tensors["projection.linear2.weight"] = tensors["projection.linear2.weight"][:, :16].contiguous()
        replace_tensors(src, tensors)
        expected = "wrong shapes: projection.linear2.weight"
    elif damage in ("nan", "inf"):
        tensors["vision_adapters.3.conv_A.bias"][2] = float(damage)
        replace_tensors(src, tensors)
        expected = "NaN or infinite"
    elif damage == "no-sha":
        edit_manifest(src, weights_sha256="")
        expected = "lacks weights_sha256"
    elif damage == "swapped-classes":
        edit_manifest(src, class_names=["normal", "pneumoconiosis"])
        expected = "class_names"
    elif damage == "nan-mean":
        edit_manifest(src, preprocessing={**manifest["preprocessing"], "mean": [float("nan"), 0.5, 0.5]})
        expected = "mean must be 3 finite numbers"
    else:
        edit_manifest(src, preprocessing={**manifest["preprocessing"], "image_size": 100000})
        expected = "image_size must be 224"
    with pytest.raises(BundleError, match=expected):
        registry.add(src)
    assert registry.list() == []
    assert not registry.bundles_dir.exists() or not any(registry.bundles_dir.iterdir())


def test_the_demo_choice_is_kept_until_a_bundle_is_activated(tmp_path: Path, registry: ModelRegistry) -> None:
    a = registry.add(make_bundle(tmp_path / "a", seed=1, model_id="a"))
    b = registry.add(make_bundle(tmp_path / "b", seed=2, model_id="b"))
    registry.activate(a.id)
    registry.use_demo()
    again = ModelRegistry(registry.root)  # another process / a restart reads the same file
    assert again.demo_chosen() and again.active_id() == a.id
    again.activate(a.id)  # re-activating the active bundle leaves the demo
    assert not registry.demo_chosen() and registry.history() == []
    registry.use_demo()
    registry.activate(b.id)
    assert not registry.demo_chosen() and registry.active_id() == b.id
    registry.use_demo()
    assert registry.rollback().id == a.id and not registry.demo_chosen()
    registry.use_demo()
    registry.leave_demo()
    assert not registry.demo_chosen()


def test_clean_stale_removes_leftovers_of_dead_runs_only(tmp_path: Path, registry: ModelRegistry) -> None:
    import os
    import time

    registry.add(make_bundle(tmp_path / "a"))
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    dead_pid = int(dead.stdout)
    old = time.time() - 2 * 3600
    leftovers = {
        registry.bundles_dir / f".20261201-x.tmp-{dead_pid}-0badc0de": True,  # staging of a dead process
        registry.bundles_dir / ".incoming-0123456789abcdef": True,  # older layout, old
        registry.bundles_dir / ".removing-0123456789abcdef": True,
        registry.root / ".registry.json.abc123.tmp": True,  # atomic_open leftover, old
        registry.bundles_dir / f".20261201-y.tmp-{os.getpid()}-00c0ffee": False,  # this process: in progress
        registry.root / ".registry.json.fresh.tmp": False,  # maybe being written right now
    }
    for path in leftovers:
        if path.name.endswith(".json.abc123.tmp") or path.name.endswith("fresh.tmp"):
            path.write_text("{}")
        else:
            path.mkdir()
            (path / "weights.safetensors").write_bytes(b"x" * 10)
        if "fresh" not in path.name and str(os.getpid()) not in path.name:
            os.utime(path, (old, old))
    removed = registry.clean_stale()
    assert sorted(removed) == sorted(p for p, stale in leftovers.items() if stale)
    assert all(p.exists() != stale for p, stale in leftovers.items())
    assert len(registry.list()) == 1


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with small_filesystem(tmp_path / "small") as mount_point:
        yield mount_point


def test_a_full_disk_is_one_clear_error_and_leaves_no_partial_folder(tmp_path: Path, small_disk: Path) -> None:
    registry = ModelRegistry(small_disk / "registry")
    with pytest.raises(BundleError) as info:
        registry.add(make_bundle(tmp_path / "a"))
    assert info.value.reason.startswith("disk full: ")
    assert registry.list() == [] and list(registry.bundles_dir.iterdir()) == []


def test_an_unwritable_registry_is_one_clear_error(tmp_path: Path, small_disk: Path) -> None:
    (small_disk / "registry").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    registry = ModelRegistry(small_disk / "registry")
    with pytest.raises(BundleError, match=r"^cannot write .*Read-only file system"):
        registry.add(make_bundle(tmp_path / "a"))
    with pytest.raises(BundleError, match=r"^cannot write .*Read-only file system"):
        registry.use_demo()
