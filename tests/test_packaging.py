"""Packaging inputs (the full PyInstaller build takes minutes: run scripts/build_app.sh for it).

These checks are fast: the spec and build script parse, the files the spec bundles exist, the
icon files are real images, and resources are found the way the frozen app finds them.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from pneumoview import paths

ROOT = Path(__file__).resolve().parents[1]


def test_spec_is_valid_python_and_names_the_entry_point() -> None:
    source = (ROOT / "pneumoview.spec").read_text(encoding="utf-8")
    ast.parse(source)
    assert '"__main__.py"' in source and (ROOT / "pneumoview" / "__main__.py").is_file()


def test_bundled_data_exist() -> None:
    assert sorted(p.name for p in (ROOT / "pneumoview" / "inference" / "configs").glob("*.json"))
    svg = ROOT / "resources" / "icons" / "pneumoview.svg"
    assert svg.read_text(encoding="utf-8").lstrip().startswith("<?xml") and "<svg" in svg.read_text(encoding="utf-8")
    with Image.open(ROOT / "resources" / "icons" / "pneumoview.png") as png:
        assert png.size == (256, 256) and png.mode == "RGBA"
    with Image.open(ROOT / "resources" / "icons" / "pneumoview.ico") as ico:
        assert (256, 256) in ico.info["sizes"] and (16, 16) in ico.info["sizes"]
    qss = (ROOT / "resources" / "styles" / "pneumoview.qss").read_text(encoding="utf-8")
    assert qss.count("{") == qss.count("}") > 10


def test_frozen_app_finds_resources_under_meipass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert paths.resource_path("styles", "pneumoview.qss") == tmp_path / "resources" / "styles" / "pneumoview.qss"
    monkeypatch.delattr(sys, "_MEIPASS")
    assert paths.resource_path("styles", "pneumoview.qss").is_file()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_build_script_parses() -> None:
    script = ROOT / "scripts" / "build_app.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True, timeout=30).returncode == 0
