"""``pneumoview analyze`` split across two CPU processes (gloo): one CSV, the same as one process."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def rows(path: Path) -> list[dict[str, str]]:
    """The CSV's rows by path, without ``analysed_at`` (when each run happened, the one column that differs)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        found = sorted(csv.DictReader(f), key=lambda r: r["path"])
    assert all("analysed_at" in r for r in found)
    return [{k: v for k, v in r.items() if k != "analysed_at"} for r in found]


REPO_ROOT = Path(__file__).resolve().parents[1]


def test_two_processes_write_the_same_csv_as_one(tmp_path: Path, shared_data: Path) -> None:
    images = shared_data / "cxr-labelled" / "images"
    folder = tmp_path / "in"
    folder.mkdir()
    for picture in sorted(images.iterdir())[:5]:  # links: the real files are never copied
        (folder / picture.name).symlink_to(picture)
    (folder / "RG1_UNCR.dcm").symlink_to(shared_data / "cxr-dicom" / "RG1_UNCR.dcm")
    (folder / "broken.dcm").write_bytes(b"DICM but not really")
    env = {
        **os.environ,
        "PNEUMOVIEW_HOME": str(tmp_path / "home"),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO_ROOT),
    }
    common = [str(folder), "--demo", "--include-pictures", "-q"]
    one = subprocess.run(
        [sys.executable, "-m", "pneumoview", "analyze", *common, "--csv", str(tmp_path / "one.csv")],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 1, one.stderr  # the broken file is reported, the rest analysed
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "-m",
            "pneumoview",
            "analyze",
            *common,
            "--csv",
            str(tmp_path / "two.csv"),
        ],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # world size 2: each process says which it is and how many files it took
    assert "process 1 of 2: 3 of 6 file(s)" in two.stderr and "process 2 of 2: 3 of 6 file(s)" in two.stderr, (
        two.stderr[-3000:]
    )
    assert two.stderr.count("analysed 6 image(s)") == 1  # rank 0 alone reports and writes
    first, second = rows(tmp_path / "one.csv"), rows(tmp_path / "two.csv")
    assert len(first) == 7 and sum(r["status"] == "analysed" for r in first) == 6
    assert [r["path"] for r in first] == [r["path"] for r in second]
    differences = [(a["path"], k, a[k], b[k]) for a, b in zip(first, second) for k in a if a[k] != b[k]]
    assert differences == []
