"""Atomic folders and files: build then rename, nothing partial left, one-line write errors, stale cleanup."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pneumoview.atomic import atomic_dir, atomic_write_text, clean_stale, write_error_reason


def test_atomic_dir_builds_then_renames(tmp_path: Path) -> None:
    target = tmp_path / "bundle"
    with atomic_dir(target) as staging:
        (staging.path / "a.txt").write_text("new")
        assert not target.exists() and staging.path.parent == tmp_path and staging.path.name.startswith(".bundle.tmp-")
    assert staging.final == target and (target / "a.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_atomic_dir_failure_leaves_nothing_and_keeps_the_old_folder(tmp_path: Path) -> None:
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target, replace=True) as staging:
        (staging.path / "a.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert (target / "a.txt").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    with pytest.raises(FileExistsError), atomic_dir(target):
        pass
    with atomic_dir(target, replace=True) as staging:
        (staging.path / "a.txt").write_text("new")
    assert (target / "a.txt").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_atomic_dir_unique_picks_a_free_name(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x-2").mkdir()
    with atomic_dir(tmp_path / "x", unique=True) as staging:
        (staging.path / "f").write_text("1")
    assert staging.final == tmp_path / "x-3" and (tmp_path / "x-3" / "f").is_file()


def test_write_error_reason_is_one_line() -> None:
    assert write_error_reason(OSError(errno.ENOSPC, "No space left on device"), "/r/models") == "disk full: /r/models"
    assert write_error_reason(OSError(errno.EDQUOT, "Disk quota exceeded"), "/r") == "disk full: /r"
    assert (
        write_error_reason(PermissionError(errno.EACCES, "Permission denied"), "/r")
        == "cannot write /r: Permission denied"
    )


def test_clean_stale_keeps_live_and_fresh_leftovers(tmp_path: Path) -> None:
    dead = int(
        subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
        ).stdout
    )
    dead_dir = tmp_path / f".bundle.tmp-{dead}-deadbeef"
    live_dir = tmp_path / f".bundle.tmp-{os.getpid()}-c0ffee00"
    old_file = tmp_path / ".registry.json.abc.tmp"
    new_file = tmp_path / ".registry.json.def.tmp"
    keep = tmp_path / "bundle.tmp-1-2"  # not hidden: never ours to remove
    for d in (dead_dir, live_dir, keep):
        d.mkdir()
    for f in (old_file, new_file):
        f.write_text("{}")
    os.utime(old_file, (0, 0))
    assert sorted(clean_stale(tmp_path)) == sorted([dead_dir, old_file])
    assert not dead_dir.exists() and not old_file.exists()
    assert live_dir.exists() and new_file.exists() and keep.exists()
    atomic_write_text(tmp_path / "registry.json", "{}")
    assert clean_stale(tmp_path) == []
