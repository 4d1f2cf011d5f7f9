"""Shared test fixtures.

Tests that read real data from ``../shared`` use the ``shared_data`` fixture (or the
``needs_shared`` marker helper); they are skipped with a clear reason where that folder
is absent. CI always has it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from data_support import REPO_ROOT, SHARED_DATA, SHARED_DIR, shared_path  # noqa: F401  (re-exported)

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Never contact a model hub from tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The ``../shared/data`` folder; skips where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("needs ../shared/data (real data; absent here)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def rg1_uncompressed() -> Path:
    """RG1: real chest PA CR, MONOCHROME1, 15 bits stored, Explicit VR Little Endian."""
    return shared_path("cxr-dicom", "RG1_UNCR.dcm")


@pytest.fixture(scope="session")
def rg1_j2k() -> Path:
    """RG1 as JPEG 2000 lossless: must decode to exactly the pixels of RG1_UNCR."""
    return shared_path("cxr-dicom", "RG1_J2KR.dcm")
