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


@pytest.mark.slow
def test_attention_overlay_in_the_viewer_cached_per_image_and_model(
    qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rg1_uncompressed: Path, rg1_j2k: Path
) -> None:
    """Issue 11 item 5: the demo model's map on RG1, mapped back through the crop box into the main
    viewer as a toggled layer; computed once per image and model, gone when the image or model changes."""
    from ui_support import make_study_folder, reviewer_home

    from pneumoview.dicom.lungs import LungBox
    from pneumoview.inference.attention_maps import Heatmap
    from pneumoview.ui.main_window import MainWindow

    reviewer_home(tmp_path, monkeypatch)
    folder = make_study_folder(tmp_path, rg1_uncompressed, rg1_j2k)
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignal(window.scanFinished, timeout=60000):
        window.open_paths([folder])
    window.use_demo_model()
    keys = {e.path.name: k for k, e in window.session.entries.items()}
    window.select_key(keys["RG1_UNCR.dcm"])
    viewer, action = window.viewer, window.act_attention_overlay
    qtbot.waitUntil(lambda: viewer.view is not None and viewer.view.path.name == "RG1_UNCR.dcm", timeout=60000)
    assert action.isCheckable() and "not a finding" in action.text()
    try:
        action.trigger()  # on: computed in the analysis worker
        assert action.isChecked()
        qtbot.waitUntil(lambda: viewer.attention_map is not None, timeout=240000)
        ((key, spec), event) = next(iter(window.attention_cache.items()))
        assert key == keys["RG1_UNCR.dcm"] and spec == window.engine_spec and event["demo"] is True
        # The 224x224 map mapped back through the crop box, at the preview's scale: zero outside the box.
        scale = viewer.view.scale
        x0, y0, x1, y1 = (round(v * scale) for v in event["box"])
        shape = (round(viewer.view.height * scale), round(viewer.view.width * scale))
        heat = viewer.attention_map
        from pneumoview.inference.attention_maps import decode_map

        expected = Heatmap(decode_map(event["crop_map"], event["size"]), 0.0).on_image(
            LungBox(x0, y0, x1, y1, fallback=False, confidence=0.0), shape
        )
        assert heat.shape == shape and np.array_equal(heat, expected)
        inside = heat[y0:y1, x0:x1]
        assert inside.max() > 0.9 and heat.sum() == pytest.approx(inside.sum())  # nothing outside the box
        shown = viewer.grab().toImage()
        assert viewer.ATTENTION_CAPTION == "model attention \u2014 not a lesion finding"
        # Off and on again: the layer goes, then comes back from the cache without a new job.
        action.trigger()
        assert not action.isChecked() and viewer.attention_map is None
        plain = viewer.grab().toImage()
        assert plain != shown  # the layer (and its caption) changed what is drawn
        assert window.toggle_attention_overlay(True) is None and viewer.attention_map is not None
        # The heatmap dialog of the same image and model reuses the kept map (no second model run).
        job = window.show_heatmap()
        assert job is not None and job._args[-1] is event
        qtbot.waitUntil(lambda: getattr(window, "_heatmap_dialog", None) is not None, timeout=60000)
        assert "not a lesion finding" in window._heatmap_dialog.caption.text()
        # Another image: the layer is cleared and the action unchecked.
        action.setChecked(True)
        window.select_key(keys["RG1_J2KR.dcm"])
        qtbot.waitUntil(lambda: viewer.view is not None and viewer.view.path.name == "RG1_J2KR.dcm", timeout=60000)
        assert viewer.attention_map is None and not action.isChecked()
        # Another model: the kept maps are dropped.
        window.engine_spec = None
        assert window.attention_cache == {}
    finally:
        window.analysis_client.close()
