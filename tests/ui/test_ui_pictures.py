"""PNG/JPEG/TIFF radiographs in the main window: listed under "No DICOM header", viewable with the marker, analysable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ui_support import open_window_on, reviewer_home

from pneumoview.dicom.pictures import NO_DICOM_HEADER
from pneumoview.session import Status


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return reviewer_home(tmp_path, monkeypatch)


@pytest.mark.slow
def test_pictures_are_listed_viewed_and_analysed(qtbot, home: Path, tmp_path: Path, shared_data: Path) -> None:
    folder = tmp_path / "pictures"
    folder.mkdir()
    png = sorted((shared_data / "cxr" / "images").glob("*.png"))[0]
    os.symlink(png, folder / png.name)
    (folder / "text.png").write_text("not a picture\n", encoding="utf-8")
    window = open_window_on(qtbot, [folder])
    assert window.tree_model.index(0, 0).data() == NO_DICOM_HEADER
    assert [p.path.name for p in window.session.problems] == ["text.png"]
    (entry,) = window.session.entries.values()
    assert entry.identity is not None and entry.image_key == f"-|{entry.identity.content_sha256}"
    window.select_key(entry.key)
    qtbot.waitUntil(lambda: window.viewer.view is not None, timeout=60000)
    assert window.viewer.no_dicom_header and window.viewer.view.path.name == png.name
    qtbot.waitUntil(lambda: bool(window.tags.rows_text()), timeout=60000)
    assert window.tags.rows_text()[0].startswith(f" {NO_DICOM_HEADER} ") and "PNG picture" in window.tags.rows_text()[0]
    window.use_demo_model()
    with qtbot.waitSignal(window.analysisFinished, timeout=240000) as blocker:
        assert window.analyse_all() is not None
    assert blocker.args == [1] and entry.status is Status.ANALYSED and entry.result.demo
    stored = window.result_store.result_for(entry.image_key)
    assert stored is not None and stored.image.sop_instance_uid == "" and stored.probability == entry.result.probability
