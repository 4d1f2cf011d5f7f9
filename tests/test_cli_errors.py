"""The ``pneumoview`` command's edge: every error is one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

import pneumoview.commands.scan as scan_command
from pneumoview.cli import main


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (
            OSError(errno.ENOSPC, "No space left on device", "/data/out.csv"),
            "pneumoview scan: error: disk full: /data/out.csv",
        ),
        (
            PermissionError(errno.EACCES, "Permission denied", "/data/x"),
            "pneumoview scan: error: cannot write /data/x: Permission denied",
        ),
        (
            OSError(errno.EROFS, "Read-only file system", "/mnt/ro/a"),
            "pneumoview scan: error: cannot write /mnt/ro/a: Read-only file system",
        ),
    ],
)
def test_an_os_error_escaping_a_command_is_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    error: OSError,
    line: str,
) -> None:
    def failing_run(args: object) -> int:
        raise error

    monkeypatch.setattr(scan_command, "run", failing_run)
    assert main(["scan", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == line and "Traceback" not in captured.err


def test_home_as_a_file_is_one_line_for_train(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    home = tmp_path / "home"
    home.write_text("not a folder")
    monkeypatch.setenv("PNEUMOVIEW_HOME", str(home))
    (tmp_path / "data").mkdir()
    assert main(["train", str(tmp_path / "data"), "--demo", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"pneumoview train: error: cannot write {home}: a file is in the way, not a folder"]
