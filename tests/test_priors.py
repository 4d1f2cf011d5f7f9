"""pneumoview.priors: the same worker's earlier studies, from the session and the results database."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from priors_support import CURRENT, LATER, LATER_DATE, OTHER_WORKER, PRIOR, PRIOR_DATE, make_priors_folder

from pneumoview.dicom.scan import ImageRecord, scan
from pneumoview.priors import (
    SOURCE_SESSION,
    SOURCE_STORE,
    find_priors,
    format_date,
    priors_for,
    same_worker,
    usable_patient_id,
)
from pneumoview.results import identify
from pneumoview.store import ImageInfo, ResultStore


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory, rg1_uncompressed: Path) -> dict[str, ImageRecord]:
    folder = make_priors_folder(tmp_path_factory.mktemp("priors"), rg1_uncompressed)
    result = scan([folder])
    assert not result.problems
    return {r.path.name: r for r in result.images}


def test_the_earlier_study_of_the_same_worker_only(worker: dict[str, ImageRecord]) -> None:
    studies = priors_for(worker[CURRENT], worker.values())
    assert [s.image.path.name for s in studies] == [PRIOR]
    assert studies[0].date_text == format_date(PRIOR_DATE) == "2001-03-05"
    assert studies[0].source == SOURCE_SESSION and studies[0].study_uid != worker[CURRENT].study_uid


def test_later_studies_on_request_newest_first(worker: dict[str, ImageRecord]) -> None:
    studies = priors_for(worker[CURRENT], worker.values(), include_later=True)
    assert [s.image.path.name for s in studies] == [LATER, PRIOR]
    assert [s.study_date for s in studies] == [LATER_DATE, PRIOR_DATE]
    # seen from the later study, the current one is a prior too (and comes first)
    from_later = priors_for(worker[LATER], worker.values())
    assert [s.image.path.name for s in from_later] == [CURRENT, PRIOR]


def test_another_worker_is_never_a_prior(worker: dict[str, ImageRecord]) -> None:
    assert not same_worker(worker[CURRENT], worker[OTHER_WORKER])
    assert priors_for(worker[OTHER_WORKER], worker.values(), include_later=True) == []


@pytest.mark.parametrize("anonymous", ["", "   ", "ANONYMOUS", "anonymized", "Unknown", "0000000", "---", "N/A"])
def test_empty_or_anonymised_ids_never_match(worker: dict[str, ImageRecord], anonymous: str) -> None:
    assert not usable_patient_id(anonymous)
    records = [dataclasses.replace(r, patient_id=anonymous) for r in worker.values()]
    current = next(r for r in records if r.path.name == CURRENT)
    assert priors_for(current, records, include_later=True) == []
    assert not same_worker(current, current)


@pytest.mark.parametrize("patient_id", ["9RG1", "0012345", "A-1"])
def test_real_ids_are_usable(patient_id: str) -> None:
    assert usable_patient_id(patient_id)


@pytest.mark.parametrize(
    ("current_issuer", "prior_issuer", "matches"),
    [
        ("", "", True),
        ("HOSPITAL-A", "HOSPITAL-A", True),
        ("HOSPITAL-A", "HOSPITAL-B", False),
        ("HOSPITAL-A", "", False),
    ],
)
def test_issuer_of_patient_id_must_agree(
    worker: dict[str, ImageRecord], current_issuer: str, prior_issuer: str, matches: bool
) -> None:
    current = dataclasses.replace(worker[CURRENT], issuer_of_patient_id=current_issuer)
    prior = dataclasses.replace(worker[PRIOR], issuer_of_patient_id=prior_issuer)
    assert [s.image.path.name for s in find_priors(current, [(prior, SOURCE_SESSION)])] == ([PRIOR] if matches else [])


def test_issuer_is_read_from_the_header(tmp_path: Path, rg1_uncompressed: Path) -> None:
    from priors_support import write_copy

    path = write_copy(rg1_uncompressed, tmp_path / "issued.dcm", study_date="20000101", issuer="MINE-CLINIC")
    assert scan([path]).images[0].issuer_of_patient_id == "MINE-CLINIC"


def test_undated_studies_come_last(worker: dict[str, ImageRecord]) -> None:
    undated = dataclasses.replace(worker[LATER], study_date="", study_time="")
    studies = find_priors(worker[CURRENT], [(undated, SOURCE_SESSION), (worker[PRIOR], SOURCE_SESSION)])
    assert [(s.image.path.name, s.date_text) for s in studies] == [(PRIOR, "2001-03-05"), (LATER, "date unknown")]


def test_the_frontal_image_represents_a_study(worker: dict[str, ImageRecord]) -> None:
    prior = worker[PRIOR]
    lateral = dataclasses.replace(prior, path=prior.path.with_name("a_lateral.dcm"), view_position="LL")
    studies = find_priors(worker[CURRENT], [(lateral, SOURCE_SESSION), (prior, SOURCE_SESSION)])
    assert len(studies) == 1 and len(studies[0].images) == 2 and studies[0].image.path.name == PRIOR


def _store_with(tmp_path: Path, *records: ImageRecord) -> ResultStore:
    store = ResultStore(tmp_path / "results.sqlite")
    store.upsert_images(ImageInfo.from_record(r, identify(r.path, r.sop_instance_uid)) for r in records)
    return store


def test_priors_from_the_results_database(tmp_path: Path, worker: dict[str, ImageRecord]) -> None:
    elsewhere = tmp_path / "archive"
    elsewhere.mkdir()
    copied = dataclasses.replace(worker[PRIOR], path=Path(shutil.copy(worker[PRIOR].path, elsewhere / "old.dcm")))
    store = _store_with(tmp_path, copied, worker[OTHER_WORKER])
    try:
        assert [i.path for i in store.images_of_patient("")] == []
        studies = priors_for(worker[CURRENT], [worker[CURRENT]], store)
        assert [(s.image.path.name, s.source) for s in studies] == [("old.dcm", SOURCE_STORE)]
        # the same study open in the session as well: listed once, as open
        both = priors_for(worker[CURRENT], [worker[CURRENT], worker[PRIOR]], store)
        assert [(len(s.images), s.source) for s in both] == [(2, SOURCE_SESSION)]
        copied.path.unlink()  # a stored file that is gone is not offered
        assert priors_for(worker[CURRENT], [worker[CURRENT]], store) == []
    finally:
        store.close()


def test_a_stored_file_now_of_another_worker_is_not_offered(tmp_path: Path, worker: dict[str, ImageRecord]) -> None:
    path = tmp_path / "replaced.dcm"
    shutil.copy(worker[PRIOR].path, path)
    store = _store_with(tmp_path, dataclasses.replace(worker[PRIOR], path=path))
    try:
        shutil.copy(worker[OTHER_WORKER].path, path)  # the file at that path now holds another worker's study
        assert priors_for(worker[CURRENT], [worker[CURRENT]], store) == []
    finally:
        store.close()
