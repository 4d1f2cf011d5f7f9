"""Fixtures for the reading workflow tests: a real SQLite results store in a temporary folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pneumoview.reading.repository import ReadingRepository
from pneumoview.store import ImageInfo, ResultStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ResultStore]:
    with ResultStore(tmp_path / "results.sqlite3") as s:
        yield s


@pytest.fixture
def repo(store: ResultStore) -> ReadingRepository:
    return ReadingRepository(store)


def add_study(store: ResultStore, study_uid: str, probability: float | None = 0.83, *, n_images: int = 1,
              patient_id: str = "W-0001", patient_name: str = "Miner^Ann", demo: bool = False) -> list[str]:
    """Images of one study (and a model result for each when ``probability`` is given)."""
    keys = []
    for i in range(n_images):
        info = ImageInfo(image_key=f"{study_uid}.{i + 1}", path=f"/clinic/{study_uid}/{i + 1}.dcm",
                         sop_instance_uid=f"{study_uid}.{i + 1}", patient_id=patient_id, patient_name=patient_name,
                         study_uid=study_uid, study_date="20260314", view_position="PA")
        if probability is None:
            store.upsert_images([info])
        else:
            store.save_result(info.image_key, image=info, probability=probability - 0.1 * i, threshold=0.5,
                              label="pneumoconiosis" if probability - 0.1 * i >= 0.5 else "normal",
                              model_name="PneumoLLM", demo=demo)
        keys.append(info.image_key)
    return keys
