"""The DICOM tags panel reads headers through the bounded read-only reader (never ``dcmread`` directly)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from pneumoview.errors import DicomReadError, NotRegularFileError
from pneumoview.ui.tags_panel import TagsPanel, read_tags

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dicom"))
import hostile


def test_read_tags_lists_the_header_and_never_the_pixels() -> None:
    rows = read_tags(Path(get_testdata_file("CT_small.dcm")))
    tags = {row[0] for row in rows}
    assert "(0010,0010)" in tags and "(0028,0010)" in tags and "(7FE0,0010)" not in tags
    assert rows[0][0] == "File meta" and any(child[0] == "(0002,0010)" for child in rows[0][4])


def test_read_tags_refuses_fifos_junk_and_deflate_bombs(tmp_path: Path) -> None:
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    with pytest.raises(NotRegularFileError):
        read_tags(pipe)
    junk = tmp_path / "junk.txt"
    junk.write_text("hello " * 100)
    with pytest.raises(DicomReadError):
        read_tags(junk)
    with pytest.raises(DicomReadError, match="out of order|inflates past"):
        read_tags(hostile.deflate_bomb(tmp_path / "bomb.dcm", inflated_mib=64))
    good = hostile.deflated(tmp_path / "deflated.dcm")
    assert any(row[0] == "(0028,0010)" and row[3] == "128" for row in read_tags(good))


def test_panel_shows_an_error_row_for_an_unreadable_file(qtbot, tmp_path: Path) -> None:
    panel = TagsPanel()
    qtbot.addWidget(panel)
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    panel.show_path(pipe)
    qtbot.waitUntil(lambda: panel.tree.topLevelItemCount() == 1, timeout=10000)
    assert "not-a-regular-file" in panel.tree.topLevelItem(0).text(3)
