"""Where the real data used by the tests is (``../shared/data``), importable by name from any test
module (``from data_support import shared_path``): a ``conftest`` module cannot be, since each test
folder may have its own."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("PNEUMOVIEW_SHARED", REPO_ROOT.parent / "shared")).resolve()
SHARED_DATA = SHARED_DIR / "data"


def shared_path(*parts: str) -> Path:
    """Path under ``../shared/data``; skips the calling test if it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs ../shared/data/{'/'.join(parts)} (real data; absent here)")
    return path
