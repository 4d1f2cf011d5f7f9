"""The window's image-quality badge (worker-thread preparation), on real files."""

from __future__ import annotations

from data_support import shared_path

from pneumoview.dicom import quality


def test_badge_for_the_window(rg1_uncompressed) -> None:
    from pneumoview.ui.calibration_actions import prepare_with_quality

    model_input = prepare_with_quality(rg1_uncompressed)
    assert model_input.notes[-1] == "Image quality: caution (pixel-spacing-unknown)"
    ards = prepare_with_quality(shared_path("cxr", "images", "ARDSSevere.png"))
    assert ards.notes[-1].startswith("Image quality: BELOW THE GATE (lungs-cut-off")
    assert quality.badge_text(quality.QualityReport(())) == "Image quality: passed"
