"""Benchmark: header scan of 1,000 / 5,000 / 10,000 DICOM files (synthetic copies in a temp folder).

Each file is a real chest CR header (RG1 from pydicom-data) with its own patient / study /
series / SOP UIDs (4 images per series, 2 series per study, 2 studies per patient) and a small
64x64 pixel payload, spread over nested folders, plus 1 % junk files that must be reported.
Timed in the same run:

* ``pneumoview``: :func:`pneumoview.dicom.scan.scan` (records + problems) and grouping
  (``ScanResult.patients()``);
* ``baseline``: the straightforward loop, ``pydicom.dcmread(path)`` of every whole file (no
  ``stop_before_pixels``) and the same ~29 attributes read through pydicom's conversion.
  With the tiny 8 kB pixel payload here the whole-file read costs little; with real 5-30 MB
  radiographs the baseline would be dominated by reading pixel data.

RSS (psutil) is sampled every 10 ms during each scan; "peak - before" shows whether memory stays
flat as the count grows (the records themselves are kept, ~1-2 kB each). The page cache is warm
(files were just written): a cold network share is slower. Target: 10,000 files <= 20 s.

Usage: ``python benchmarks/scan_headers.py [--counts 1000 5000 10000]``.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import psutil
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from pneumoview.dicom.scan import iter_files, scan

SHARED_RG1 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cxr-dicom" / "RG1_UNCR.dcm"


def make_corpus(folder: Path, count: int) -> None:
    """``count`` DICOM files (+1 % junk) under ``folder/pNNNN/sNN/``."""
    source = SHARED_RG1 if SHARED_RG1.is_file() else Path(get_testdata_file("RG1_UNCR.dcm"))
    template: Dataset = pydicom.dcmread(source, stop_before_pixels=True)
    template.Rows = template.Columns = 64
    template.PixelData = bytes(64 * 64 * 2)
    template["PixelData"].VR = "OW"
    root = pydicom.uid.generate_uid(prefix=None)[:40]
    for i in range(count):
        patient, study, series = i // 16, i // 8, i // 4
        ds = template.copy()
        ds.PatientID = f"P{patient:06d}"
        ds.PatientName = f"Synthetic^{patient}"
        ds.StudyInstanceUID = f"{root}.1.{study}"
        ds.SeriesInstanceUID = f"{root}.2.{series}"
        ds.SeriesNumber = series % 2 + 1
        ds.InstanceNumber = i % 4 + 1
        ds.SOPInstanceUID = f"{root}.3.{i}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        target = folder / f"p{patient // 100:04d}" / f"s{study % 100:02d}"
        target.mkdir(parents=True, exist_ok=True)
        ds.save_as(target / f"IM{i:06d}", enforce_file_format=True)
        if i % 100 == 99:
            (target / f"junk{i:06d}.txt").write_bytes(b"not dicom " * 20)


class PeakRSS:
    """Samples this process's RSS every 10 ms while active."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.01)

    def __enter__(self) -> PeakRSS:
        self.before = self.process.memory_info().rss
        self.peak = self.before
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def pneumoview_scan(folder: Path) -> tuple[int, int]:
    result = scan([folder])
    result.patients()
    return len(result.images), len(result.problems)


#: The attributes an ImageRecord holds, fetched the straightforward way (pydicom conversion).
RECORD_KEYWORDS = (
    "SOPInstanceUID SOPClassUID PatientID PatientName PatientSex PatientBirthDate StudyInstanceUID StudyDate "
    "StudyTime StudyDescription AccessionNumber SeriesInstanceUID SeriesNumber SeriesDescription Modality "
    "ViewPosition BodyPartExamined ImageLaterality Rows Columns PhotometricInterpretation BitsStored "
    "NumberOfFrames PixelSpacing ImagerPixelSpacing InstanceNumber ProtocolName SamplesPerPixel ImageType"
).split()


def baseline_scan(folder: Path) -> tuple[int, int]:
    """Whole-file ``dcmread`` (pixels included) and the same attributes through pydicom's conversion."""
    images = problems = 0
    kept = []
    for path in iter_files([folder]):
        try:
            ds = pydicom.dcmread(path)
            kept.append({keyword: ds.get(keyword) for keyword in RECORD_KEYWORDS})
            images += 1
        except (pydicom.errors.InvalidDicomError, OSError, ValueError):
            problems += 1
    return images, problems


def measure(function: Callable[[Path], tuple[int, int]], folder: Path) -> tuple[float, float, int, int]:
    gc.collect()
    with PeakRSS() as rss:
        start = time.perf_counter()
        images, problems = function(folder)
        seconds = time.perf_counter() - start
    return seconds, (rss.peak - rss.before) / 2**20, images, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    print(f"python {sys.version.split()[0]}, pydicom {pydicom.__version__}; warm page cache")
    print(
        f"{'files':>7s} {'pipeline':>11s} {'seconds':>8s} {'ms/file':>8s} {'RSS peak-before MiB':>20s} "
        f"{'images':>7s} {'problems':>8s}"
    )
    for count in args.counts:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            make_corpus(folder, count)
            runs: list[tuple[str, Callable[[Path], tuple[int, int]]]] = [("pneumoview", pneumoview_scan)]
            if not args.no_baseline:
                runs.append(("baseline", baseline_scan))
            for name, function in runs:
                seconds, mib, images, problems = measure(function, folder)
                print(
                    f"{count:7d} {name:>11s} {seconds:8.2f} {seconds / count * 1000:8.2f} {mib:20.1f} "
                    f"{images:7d} {problems:8d}",
                    flush=True,
                )
            shutil.rmtree(folder, ignore_errors=True)
    print("target: 10,000 files <= 20 s with memory flat as the count grows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
