"""Fuzz sample for CI: mutated real DICOM files (every mutation class of ``benchmarks/fuzz.py``)
through scan + decode + display + model crop, each case in a supervised child process.

Every outcome must be success or a :class:`PneumoViewError`: no exception of another type
(traceback), no process death (e.g. a codec aborting), no hang, no memory blow-up. The full
benchmark (>= 10,000 cases) is ``python benchmarks/fuzz.py``.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks import fuzz
from pneumoview.dicom.scan import scan

pytestmark = pytest.mark.filterwarnings("ignore")

SEED = 20261127
CASES = 240


@pytest.mark.slow
def test_mutated_dicoms_never_take_pneumoview_down() -> None:
    args = argparse.Namespace(cases=CASES, jobs=1, seed=SEED, hang_s=120.0, memory_mib=768.0)
    summary = fuzz.supervise(args)
    totals = summary["totals"]
    bad = [
        f"{f['outcome']}: {f['cls']} {f['source']} / {f['what']}: {f.get('detail', '')}" for f in summary["failures"]
    ]
    assert not bad, f"{len(bad)} failure(s):\n" + "\n".join(bad[:10])
    assert set(summary["classes"]) >= set(fuzz.MUTATIONS), summary["classes"]
    assert summary["cases"] >= CASES - 5
    # the mutations break files, but not all of them
    assert 20 < totals.get("ok", 0) < summary["cases"] - 50


def test_mutated_rg1_truncations(rg1_uncompressed: Path, rg1_j2k: Path, tmp_path: Path) -> None:
    """The real chest radiograph, cut at random places in both transfer syntaxes: per-file errors only."""
    rng = random.Random(SEED + 1)
    for source in (rg1_uncompressed, rg1_j2k):
        raw = source.read_bytes()
        for i in range(4):
            path = tmp_path / f"{source.stem}_{i}.dcm"
            cut = rng.randrange(0, len(raw)) if i else 2000  # 2000: inside the header
            path.write_bytes(raw[:cut])
            fuzz.exercise(path)
    result = scan([tmp_path])
    assert len(result.images) + len(result.problems) == 8


def test_a_case_is_rebuilt_identically_from_its_seed_and_number(tmp_path: Path) -> None:
    small, real = fuzz.sources()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for index in range(12):
        first = fuzz.make_case(SEED, index, tmp_path / "a", small, real)
        second = fuzz.make_case(SEED, index, tmp_path / "b", small, real)
        assert first[:3] == second[:3] and first[3].read_bytes() == second[3].read_bytes()
