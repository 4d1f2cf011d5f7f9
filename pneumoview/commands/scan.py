"""``pneumoview scan FOLDER...``: list patients / studies / series / images and every problem file.

Headers only (no pixel decoding), so it is fast on large folders. ``--json`` prints the same
as one JSON document; the exit status is 0 when every file was readable, 1 when some were
not (their path and reason are listed; FIFOs, devices and sockets are listed as
``not-a-regular-file`` and never opened), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, TextIO

from pneumoview.dicom.scan import ImageRecord, ScanResult, scan
from pneumoview.dicom.suitability import assess
from pneumoview.errors import DicomReadError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folders", nargs="+", type=Path, metavar="FOLDER", help="folders or files to scan (recursive)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a tree")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")


def run(args: argparse.Namespace) -> int:
    missing = [str(p) for p in args.folders if not p.exists()]
    if missing:
        raise DicomReadError(f"no such file or folder: {', '.join(missing)}")
    show_progress = not args.quiet and sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if show_progress and (done % 200 == 0 or done == total):
            print(f"\rscanned {done}/{total} files", end="" if done < total else "\n", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's warnings on odd-but-readable headers
        result = scan(args.folders, progress=progress)
    try:
        if args.json:
            json.dump(result_to_json(result), sys.stdout, indent=2, ensure_ascii=False)
            sys.stdout.write("\n")
        else:
            print_tree(result, sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 1 if result.errors else 0


def _image_summary(record: ImageRecord) -> str:
    verdict = assess(record)
    status = "diagnosable" if verdict.diagnosable else f"not analysed [{verdict.code}]"
    spacing = f", {record.pixel_spacing[0]:g}x{record.pixel_spacing[1]:g} mm" if record.pixel_spacing else ""
    frames = f", {record.number_of_frames} frames" if record.number_of_frames > 1 else ""
    view = record.view_position or "view ?"
    body = record.body_part or "body part ?"
    return (
        f"{record.path}  {record.modality or '?'} {body} {view}  {record.columns}x{record.rows} "
        f"{record.photometric}{frames}{spacing}  -> {status}"
    )


def print_tree(result: ScanResult, out: TextIO) -> None:
    """Readable tree: patient -> study -> series -> image, then the problems list."""
    patients = result.patients()
    for patient in patients:
        print(f"Patient {patient.patient_name or '(no name)'}  ID {patient.patient_id or '(none)'}", file=out)
        for study in patient.studies:
            date = study.study_date or "(no date)"
            print(
                f"  Study {date}  {study.description or '(no description)'}  "
                f"accession {study.accession or '-'}  UID {study.study_uid or '(none)'}",
                file=out,
            )
            for series in study.series:
                number = series.series_number if series.series_number is not None else "-"
                print(
                    f"    Series {number} {series.modality or '?'}  {series.description or ''}  "
                    f"({len(series.images)} image{'s' if len(series.images) != 1 else ''})",
                    file=out,
                )
                for image in series.images:
                    print(f"      {_image_summary(image)}", file=out)
    studies = sum(len(p.studies) for p in patients)
    series = sum(len(s.series) for p in patients for s in p.studies)
    print(
        f"\n{len(patients)} patient(s), {studies} study(ies), {series} series, {len(result.images)} image(s); "
        f"{len(result.problems)} file(s) without an image",
        file=out,
    )
    if result.problems:
        print("\nProblems:", file=out)
        for problem in result.problems:
            print(f"  [{problem.code}] {problem.path}: {problem.reason}", file=out)


def result_to_json(result: ScanResult) -> dict[str, Any]:
    """JSON-ready nested dict of the scan (paths as strings)."""
    patients = []
    for patient in result.patients():
        studies = []
        for study in patient.studies:
            series_list = []
            for series in study.series:
                images = []
                for image in series.images:
                    verdict = assess(image)
                    images.append(
                        {
                            "path": str(image.path),
                            "sop_instance_uid": image.sop_instance_uid,
                            "modality": image.modality,
                            "view_position": image.view_position,
                            "body_part": image.body_part,
                            "rows": image.rows,
                            "columns": image.columns,
                            "photometric": image.photometric,
                            "number_of_frames": image.number_of_frames,
                            "pixel_spacing": list(image.pixel_spacing) if image.pixel_spacing else None,
                            "transfer_syntax": image.transfer_syntax,
                            "diagnosable": verdict.diagnosable,
                            "reason_code": verdict.code,
                            "reason": verdict.reason,
                        }
                    )
                series_list.append(
                    {
                        "series_uid": series.series_uid,
                        "series_number": series.series_number,
                        "modality": series.modality,
                        "description": series.description,
                        "images": images,
                    }
                )
            studies.append(
                {
                    "study_uid": study.study_uid,
                    "study_date": study.study_date,
                    "description": study.description,
                    "accession": study.accession,
                    "series": series_list,
                }
            )
        patients.append({"patient_id": patient.patient_id, "patient_name": patient.patient_name, "studies": studies})
    return {
        "patients": patients,
        "problems": [{"path": str(p.path), "code": p.code, "reason": p.reason} for p in result.problems],
        "files_seen": result.files_seen,
        "images": len(result.images),
    }
