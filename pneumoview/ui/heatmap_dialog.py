"""The model-attention heatmap, overlaid on the 224x224 crop and on the whole image.

Labelled everywhere as a model-attention view (:data:`pneumoview.inference.heatmap.HEATMAP_LABEL`),
never as a lesion finding. The map comes from the analysis worker's ``heatmap`` event; this module
only decodes, maps back through the crop box and draws (numpy, no torch).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from pneumoview.dicom.lungs import LungBox
from pneumoview.inference.attention_maps import Heatmap, decode_map, overlay_rgb
from pneumoview.labels import DEMO_MARK


def overlays(event: dict[str, Any], grey: np.ndarray, crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RGB overlays (crop, whole image) from a ``heatmap`` event, the whole grey image and the crop."""
    crop_map = decode_map(event["crop_map"], int(event["size"]))
    x0, y0, x1, y1 = (int(v) for v in event["box"])
    box = LungBox(x0, y0, x1, y1, fallback=bool(event.get("fallback")), confidence=0.0)
    heat = Heatmap(crop_map, float(event.get("probability", 0.0)))
    full = heat.on_image(box, (grey.shape[0], grey.shape[1]))
    return overlay_rgb(crop, crop_map), overlay_rgb(grey, full)


def _pixmap(rgb: np.ndarray, longest: int) -> QPixmap:
    rgb = np.ascontiguousarray(rgb)
    h, w, _ = rgb.shape
    image = QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
    pixmap = QPixmap.fromImage(image)
    if max(h, w) > longest:
        pixmap = pixmap.scaled(
            longest, longest, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
        )
    return pixmap


class HeatmapDialog(QDialog):
    """Two overlays side by side under a caption that says what the colours are not."""

    def __init__(
        self, crop_rgb: np.ndarray, full_rgb: np.ndarray, *, label: str, demo: bool, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Model attention - not a lesion finding")
        layout = QVBoxLayout(self)
        prefix = f"<b>{DEMO_MARK}</b> (random demo model). " if demo else ""
        self.caption = QLabel(
            f"{prefix}<b>{label}.</b> Red-yellow marks the parts of the lung crop that raised "
            "the model's score; it does not show where disease is."
        )
        self.caption.setWordWrap(True)
        layout.addWidget(self.caption)
        row = QHBoxLayout()
        self.crop_view = QLabel()
        self.crop_view.setPixmap(_pixmap(crop_rgb, 448))
        self.full_view = QLabel()
        self.full_view.setPixmap(_pixmap(full_rgb, 600))
        row.addWidget(self.crop_view)
        row.addWidget(self.full_view)
        layout.addLayout(row)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
