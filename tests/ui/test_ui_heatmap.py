"""The heatmap request of the analysis child process (demo model, RG1) and its dialog, offscreen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pneumoview.inference.heatmap import HEATMAP_LABEL, decode_map
from pneumoview.results import identify
from pneumoview.service.analysis import WorkItem, analyse_request
from pneumoview.ui.analysis_process import AnalysisClient, EngineSpec


@pytest.mark.slow
def test_child_computes_a_heatmap_on_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rg1_uncompressed: Path, qtbot
) -> None:
    monkeypatch.setenv("PNEUMOVIEW_HOME", str(tmp_path / "home"))
    client = AnalysisClient()
    try:
        events: list[dict] = []
        final = client.request(
            EngineSpec("demo"), {"cmd": "heatmap", "key": "rg1", "path": str(rg1_uncompressed)}, events.append
        )
        assert final == {"event": "done", "count": 1}
        heat = next(e for e in events if e["event"] == "heatmap")
        assert heat["key"] == "rg1" and heat["label"] == HEATMAP_LABEL and heat["demo"] is True
        crop_map = decode_map(heat["crop_map"], heat["size"])
        assert crop_map.shape == (224, 224) and crop_map.max() == 1.0 and crop_map.std() > 0.01
        assert heat["image_shape"] == [1955, 1841] and not heat["fallback"]
        # The worker stays usable for analyses afterwards.
        again: list[dict] = []
        item = WorkItem.for_identity("rg1", identify(rg1_uncompressed))
        done = client.request(
            EngineSpec("demo"), analyse_request(EngineSpec("demo"), [item], threshold=0.5, batch_size=1), again.append
        )
        assert done["event"] == "done"
        result = next(e for e in again if e["event"] == "results")["items"][0].result
        assert result.probability == pytest.approx(heat["probability"], abs=1e-6)
    finally:
        client.close()

    from pneumoview.ui.heatmap_dialog import HeatmapDialog, overlays

    grey = np.linspace(0, 1, 1955 * 1841, dtype=np.float32).reshape(1955, 1841)
    crop_rgb, full_rgb = overlays(heat, grey, np.full((224, 224), 0.5, np.float32))
    assert crop_rgb.shape == (224, 224, 3) and full_rgb.shape == (1955, 1841, 3)
    dialog = HeatmapDialog(crop_rgb, full_rgb, label=heat["label"], demo=True)
    qtbot.addWidget(dialog)
    assert "not a lesion finding" in dialog.caption.text() and "DEMO" in dialog.caption.text()
    assert dialog.crop_view.pixmap().width() == 224
