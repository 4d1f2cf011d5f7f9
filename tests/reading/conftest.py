"""Fixtures for the reading workflow tests: a real SQLite results store in a temporary folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pneumoview.reading.repository import ReadingRepository
from pneumoview.store import ResultStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ResultStore]:
    with ResultStore(tmp_path / "results.sqlite3") as s:
        yield s


@pytest.fixture
def repo(store: ResultStore) -> ReadingRepository:
    return ReadingRepository(store)
