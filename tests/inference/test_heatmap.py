"""Attention heatmap on the tiny demo model: real open_clip ViT, real captum, real lung crop (RG1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pneumoview.dicom.lungs import crop_to_model
from pneumoview.inference.demo import ensure_demo_model
from pneumoview.inference.engine import InferenceEngine
from pneumoview.inference.heatmap import HEATMAP_LABEL, compute_heatmap, overlay_rgb
from pneumoview.preprocess import prepare


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> InferenceEngine:
    demo = ensure_demo_model(tmp_path_factory.mktemp("demo") / "demo-model")
    return InferenceEngine.load(demo.bundle, clip_path=demo.clip, llama_path=demo.llama, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def rg1_input(rg1_uncompressed):
    return prepare(rg1_uncompressed)


@pytest.fixture(scope="module")
def heat(engine, rg1_input):
    return compute_heatmap(engine, rg1_input.crop)


def test_map_shape_range_and_label(heat, engine, rg1_input) -> None:
    m = heat.crop_map
    assert m.shape == (224, 224) and m.dtype == np.float32
    assert np.isfinite(m).all() and m.min() >= 0.0 and m.max() == pytest.approx(1.0)
    assert m.std() > 0.01  # not constant
    assert "not a lesion finding" in heat.label == HEATMAP_LABEL
    assert heat.patch_relevance.shape == (14, 14)  # tiny ViT: 224 / 16
    assert heat.probability == pytest.approx(float(engine.probabilities(rg1_input.crop[None])[0]), abs=1e-6)


def test_deterministic(engine, rg1_input, heat) -> None:
    again = compute_heatmap(engine, rg1_input.crop)
    assert np.array_equal(again.crop_map, heat.crop_map)


def test_matches_an_independent_gradient_times_input(engine, rg1_input, heat) -> None:
    """Hooks of our own on the same block: d(margin)/d(tokens) * tokens, summed over the width."""
    model = engine.model
    captured = {}

    def keep(_module, args):
        args[0].retain_grad()
        captured["tokens"] = args[0]

    handle = model.visual.transformer.resblocks[heat.block].register_forward_pre_hook(keep)
    try:
        pixels = engine._prepare(rg1_input.crop[None]).requires_grad_(True)
        logits = model(pixels)
        (logits[0, 0] - logits[0, 1]).backward()
    finally:
        handle.remove()
    tokens = captured["tokens"]
    relevance = torch.relu((tokens.grad * tokens)[0, 1:].sum(-1)).detach().numpy().reshape(14, 14)
    np.testing.assert_allclose(heat.patch_relevance, relevance, rtol=1e-4, atol=1e-7)


def test_other_content_gives_another_map(engine, rg1_input, heat) -> None:
    flipped = compute_heatmap(engine, np.ascontiguousarray(rg1_input.crop[:, ::-1]))
    assert not np.allclose(flipped.crop_map, heat.crop_map, atol=0.05)


def test_mapped_back_through_the_crop_box(heat, rg1_input) -> None:
    full = heat.on_image(rg1_input.box, rg1_input.image_shape)
    box = rg1_input.box
    assert full.shape == rg1_input.image_shape
    outside = full.copy()
    outside[box.y0 : box.y1, box.x0 : box.x1] = 0
    assert not outside.any()
    # Cropping the full-size map the way the model's crop was made gives the crop's map back.
    again = crop_to_model(full, box, 224)
    assert np.corrcoef(again.ravel(), heat.crop_map.ravel())[0, 1] > 0.98


def test_overlay() -> None:
    grey = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    none = overlay_rgb(grey, np.zeros_like(grey))
    assert none.shape == (8, 8, 3) and np.array_equal(none[..., 0], np.round(grey * 255).astype(np.uint8))
    hot = overlay_rgb(np.zeros_like(grey), np.ones_like(grey), alpha=1.0)
    assert (hot[..., 0] == 255).all() and (hot[..., 2] == 0).all()
    with pytest.raises(ValueError):
        overlay_rgb(grey, np.zeros((4, 4)))


def test_resize_matches_torch_and_encoding_round_trips(heat) -> None:
    grid = heat.patch_relevance
    from pneumoview.inference.heatmap import decode_map, encode_map, resize_bilinear

    ours = resize_bilinear(grid, (224, 200))
    theirs = torch.nn.functional.interpolate(
        torch.from_numpy(grid)[None, None], size=(224, 200), mode="bilinear", align_corners=False
    )[0, 0].numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    back = decode_map(encode_map(heat.crop_map), 224)
    assert np.abs(back - heat.crop_map).max() <= 0.5 / 255 + 1e-6


def test_the_window_can_import_the_map_helpers_without_torch() -> None:
    import subprocess
    import sys

    code = "import sys, pneumoview.inference.heatmap; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )
