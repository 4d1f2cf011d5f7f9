"""A worker's earlier study made from the real RG1 radiograph (importable by name from any test).

:func:`make_priors_folder` writes, under ``root``: RG1 itself (the current study, 2004-08-26),
a copy as an earlier study of the same worker (new Study / SOP Instance UIDs, Study Date 2001-03-05),
a later study of the same worker (2006-01-10), and a study of another worker (other Patient ID).
Only the header is changed (pydicom); the pixel data stay RG1's.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

CURRENT, PRIOR, LATER, OTHER_WORKER = "current.dcm", "prior_2001.dcm", "later_2006.dcm", "other_worker.dcm"
PRIOR_DATE, LATER_DATE = "20010305", "20060110"


def write_copy(
    rg1: Path, out: Path, *, study_date: str, patient_id: str | None = None, issuer: str | None = None
) -> Path:
    """RG1 as another study (new UIDs, ``study_date``), optionally another Patient ID / Issuer of Patient ID."""
    ds = pydicom.dcmread(rg1)
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyDate = study_date
    if patient_id is not None:
        ds.PatientID = patient_id
    if issuer is not None:
        ds.IssuerOfPatientID = issuer
    ds.save_as(out, enforce_file_format=True)
    return out


def make_priors_folder(root: Path, rg1: Path) -> Path:
    folder = root / "worker"
    folder.mkdir(parents=True)
    (folder / CURRENT).write_bytes(rg1.read_bytes())
    write_copy(rg1, folder / PRIOR, study_date=PRIOR_DATE)
    write_copy(rg1, folder / LATER, study_date=LATER_DATE)
    write_copy(rg1, folder / OTHER_WORKER, study_date="19990101", patient_id="OTHER-42")
    return folder
