"""Render resources/icons/pneumoview.svg to PNG sizes (and a Windows .ico) with Qt's SVG renderer.

Run after editing the SVG:  QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/render_icon.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QImage, QPainter
from PySide6.QtSvg import QSvgRenderer

ICONS = Path(__file__).resolve().parents[1] / "resources" / "icons"
SIZES = (16, 32, 48, 64, 128, 256)


def render(svg: Path, size: int) -> QImage:
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"invalid SVG: {svg}")
    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    return image


def main() -> int:
    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])
    svg = ICONS / "pneumoview.svg"
    for size in SIZES:
        name = "pneumoview.png" if size == 256 else f"pneumoview-{size}.png"
        if not render(svg, size).save(str(ICONS / name)):
            raise SystemExit(f"could not write {name}")
        print(ICONS / name)
    try:
        from PIL import Image
    except ImportError:
        return 0
    with Image.open(ICONS / "pneumoview.png") as big:
        big.save(ICONS / "pneumoview.ico", sizes=[(s, s) for s in SIZES])
    print(ICONS / "pneumoview.ico")
    del app
    return 0


if __name__ == "__main__":
    sys.exit(main())
