"""Results-store throughput: saving N results one transaction each (baseline) vs. in one batch,
then reopening a folder (``states``) and building report rows, and writing the CSV.

    .venv/bin/python benchmarks/store_throughput.py [--images 1000]

Every commit is synced to disk (WAL, synchronous=FULL), so the baseline is bound by fsync latency;
``ResultStore.batch()`` pays it once. Prints one line per figure.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pneumoview.report import ExportOptions, export_csv
from pneumoview.results import ImageIdentity, ImageResult, Provenance, analysed
from pneumoview.store import ImageInfo, ResultStore


def _result(info: ImageInfo) -> ImageResult:
    return analysed(
        info.identity,
        0.42,
        class_names=("pneumoconiosis", "normal"),
        demo=False,
        provenance=Provenance(bundle_name="m", threshold=0.5),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    n = parser.parse_args().images
    with tempfile.TemporaryDirectory() as tmp:
        ids = [ImageIdentity(f"1.2.826.0.{i}", f"{i:064x}", f"/data/clinic/{i // 50}/{i}.dcm") for i in range(n)]
        infos = [
            ImageInfo(
                d.key,
                d.path,
                sop_instance_uid=d.sop_instance_uid,
                content_sha256=d.content_sha256,
                patient_id=f"P{i // 4}",
                patient_name=f"Doe^{i}",
                study_uid=f"1.2.{i // 2}",
                study_date="20240101",
                view_position="PA",
            )
            for i, d in enumerate(ids)
        ]
        with ResultStore(Path(tmp) / "baseline.sqlite3") as store:
            store.upsert_images(infos)
            t0 = time.perf_counter()
            for info in infos:
                store.save(_result(info))
            baseline = time.perf_counter() - t0
        with ResultStore(Path(tmp) / "batched.sqlite3") as store:
            store.upsert_images(infos)
            t0 = time.perf_counter()
            with store.batch():
                for info in infos:
                    store.save(_result(info))
            batched = time.perf_counter() - t0
            t0 = time.perf_counter()
            with store.batch():
                for info in infos:
                    store.save_decision(info.image_key, "agree", "", "Dr A")
            decisions = time.perf_counter() - t0
            t0 = time.perf_counter()
            states = store.states(i.image_key for i in infos)
            reopen = time.perf_counter() - t0
            t0 = time.perf_counter()
            rows = store.report_rows()
            report_rows = time.perf_counter() - t0
            t0 = time.perf_counter()
            summary = export_csv(Path(tmp) / "report.csv", rows, ExportOptions(pseudonymise=True, key=b"k" * 32))
            export = time.perf_counter() - t0
        assert len(states) == n and summary.rows == n
    print(f"images: {n}")
    print(f"baseline  save, one transaction each:        {baseline:7.3f} s ({baseline / n * 1e3:.2f} ms/result)")
    print(f"batched   save in store.batch():             {batched:7.3f} s ({baseline / batched:.0f}x faster)")
    print(f"batched   save_decision:                     {decisions:7.3f} s")
    print(f"reopen    states() for all images:           {reopen:7.3f} s")
    print(f"report    report_rows():                     {report_rows:7.3f} s")
    print(f"export    pseudonymised CSV:                 {export:7.3f} s")


if __name__ == "__main__":
    main()
