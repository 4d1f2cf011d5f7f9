"""Crop cache: the pipeline fingerprint works without source files; one odd image is a listed problem."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bundle_support import small_filesystem
from PIL import Image

from pneumoview.errors import PixelDecodeError
from training import crops
from training.crops import CropCache, pipeline_fingerprint, remove_stale_temp_files
from training.datacheck import validate

REPO = Path(__file__).resolve().parents[2]


def test_pipeline_fingerprint_needs_no_py_file_as_in_a_frozen_app(tmp_path: Path) -> None:
    """Sourceless copy of the packages (only .pyc, as PyInstaller ships them): same fingerprint, no error."""
    root = tmp_path / "frozen"
    for package in ("pneumoview", "training"):
        shutil.copytree(REPO / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-b", str(root)], check=True)
    sources = list(root.rglob("*.py"))
    assert sources
    for source in sources:
        source.unlink()
    code = (
        "from training.crops import pipeline_fingerprint as f; import pneumoview.imageio as m; "
        "print(m.__file__); print(f())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    module_file, fingerprint = out.stdout.split()
    assert module_file.endswith(".pyc")  # really imported without its source
    assert fingerprint == pipeline_fingerprint()


def test_pipeline_fingerprint_changes_with_the_version_constant(monkeypatch: pytest.MonkeyPatch) -> None:
    before = pipeline_fingerprint()
    monkeypatch.setattr(crops, "PIPELINE_VERSION", crops.PIPELINE_VERSION + 1)
    pipeline_fingerprint.cache_clear()
    try:
        assert pipeline_fingerprint() != before
    finally:
        monkeypatch.undo()
        pipeline_fingerprint.cache_clear()
    assert pipeline_fingerprint() == before


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def test_an_image_the_localiser_cannot_take_is_listed_and_the_rest_trains(tmp_path: Path) -> None:
    """An image that cannot be decoded (a truncated PNG) is listed and the others train (a 1-pixel-high
    picture, which once raised out of the lung localiser, now gets the whole-image fallback)."""
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    for cls in ("normal", "pneumoconiosis"):
        for i in range(2):
            _png(data / cls / f"{i}.png", rng.integers(0, 255, (64, 64), dtype=np.uint8))
    _png(data / "normal" / "thin.png", np.full((1, 300), 128, np.uint8))  # prepared with the fallback
    thin = data / "normal" / "truncated.png"
    thin.write_bytes((data / "normal" / "0.png").read_bytes()[:60])
    cache = CropCache(tmp_path / "cache", size=32)
    with pytest.raises(PixelDecodeError, match="cannot decode"):  # decoded in the sandbox: its own error class
        cache.prepare(thin)
    dataset = validate(data, folds=2, cache=cache)
    assert len(dataset) == 5
    assert [u["path"] for u in dataset.summary.unreadable] == [str(thin)]
    assert dataset.summary.ok
    # The failure is remembered by content: the rerun does not decode again.
    again = CropCache(tmp_path / "cache", size=32)
    validate(data, folds=2, cache=again)
    assert again.misses == 0


def test_stale_hidden_temp_files_are_removed_and_fresh_ones_kept(tmp_path: Path) -> None:
    import os
    import time

    old = tmp_path / "ab" / ".key.npy.x1.tmp"
    fresh = tmp_path / "ab" / ".key.json.x2.tmp"
    keep = tmp_path / "ab" / "key.npy"
    for p in (old, fresh, keep):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert remove_stale_temp_files(tmp_path) == 1
    assert not old.exists() and fresh.exists() and keep.exists()


def test_a_full_cache_disk_is_one_storage_error_naming_the_cache(tmp_path: Path) -> None:
    from pneumoview.errors import StorageError

    rng = np.random.default_rng(1)
    image = _png(tmp_path / "a.png", rng.integers(0, 255, (256, 256), dtype=np.uint8))
    with small_filesystem(tmp_path / "cache", "4k") as mnt:
        with pytest.raises(StorageError) as info:
            CropCache(mnt, size=224).prepare(image)  # a 224x224 float32 crop needs ~200 KB
        assert info.value.message == f"disk full: {mnt}"
        assert not [p for p in mnt.rglob("*") if p.is_file()]
