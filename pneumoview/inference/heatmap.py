"""Where the model looked: a gradient x activation map over the ViT's patch tokens (captum).

**A model-attention view, never a lesion finding**: it shows which parts of the 224x224 lung crop
moved the model's score, not where disease is. Every map carries :data:`HEATMAP_LABEL`.

Method (class-activation style for a ViT, computed with ``captum.attr.LayerGradientXActivation``):
PneumoLLM reads only the *class token* after its source blocks (``config.vision.source_layers``),
so the last image-wide evidence is the token sequence entering the last source block. The
attribution target is the logit margin ``logit[pneumoconiosis] - logit[normal]``; captum gives
gradient x activation for each token [B, 1 + h*w, W]; summed over the width, ReLU, the class token
dropped, it is an ``h x w`` patch grid (14 x 14 for ViT-B/16-size tiny, 16 x 16 for ViT-L/14),
upsampled bilinearly to the crop and scaled to [0, 1]. One forward and one backward pass.
Only :func:`compute_heatmap` needs torch (imported there): the window maps, decodes and overlays
maps with numpy.

:meth:`Heatmap.on_image` maps the crop's map back into the full image through the lung box
(the crop is the box stretched to a square), zero outside it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from pneumoview.inference.attention_maps import (  # noqa: F401  (one import for the heatmap API)
    HEATMAP_LABEL,
    METHOD,
    Heatmap,
    decode_map,
    encode_map,
    overlay_rgb,
    resize_bilinear,
)

if TYPE_CHECKING:
    from pneumoview.inference.engine import InferenceEngine


def compute_heatmap(engine: InferenceEngine, crop: np.ndarray) -> Heatmap:
    """The attention map of ``engine`` (an :class:`~pneumoview.inference.engine.InferenceEngine`)
    for one grey crop float32 [S, S] in [0, 1]. Deterministic (dropout off, no sampling)."""
    import torch
    from captum.attr import LayerGradientXActivation

    class _Margin(torch.nn.Module):
        """logits [B, 2] -> [B, 1]: logit(pneumoconiosis) - logit(normal)."""

        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            logits = self.model(pixels).float()
            return (logits[:, 0] - logits[:, 1]).unsqueeze(1)

    model: Any = engine.model  # a PneumoLLM held as nn.Module; its open_clip tower's attributes are untyped
    blocks = model.visual.transformer.resblocks
    block = int(max(model.source_layers))
    pixels = engine._prepare(np.asarray(crop, np.float32)[None])  # the engine's own normalisation
    pixels = pixels.to(model.visual.conv1.weight.dtype)
    margin = _Margin(model)
    attributor = LayerGradientXActivation(margin, blocks[block], multiply_by_inputs=True)
    with engine._lock, torch.enable_grad():
        was_training = model.training
        model.eval()
        try:
            tokens = attributor.attribute(pixels, target=0, attribute_to_layer_input=True)
            with torch.inference_mode():
                probability = float(torch.softmax(model(pixels).float(), dim=-1)[0, 0])
        finally:
            model.train(was_training)
    if isinstance(tokens, tuple):
        tokens = tokens[0]
    tokens = tokens.detach().float()
    if tokens.shape[0] != 1:  # sequence-first (L, N, D) transformer
        tokens = tokens.transpose(0, 1)
    relevance = torch.relu(tokens[0, 1:].sum(dim=-1)).cpu().numpy()
    side = round(relevance.size**0.5)
    if side * side != relevance.size:
        raise ValueError(f"{relevance.size} patch tokens do not form a square grid")
    if not np.isfinite(relevance).all():
        raise ValueError("the attention map is not finite")
    size = crop.shape[0], crop.shape[1]
    crop_map = resize_bilinear(relevance.reshape(side, side), size)
    crop_map = np.clip(crop_map, 0, None)
    peak = float(crop_map.max())
    if peak > 0:
        crop_map = crop_map / peak
    return Heatmap(
        crop_map.astype(np.float32),
        probability,
        block=block,
        patch_relevance=relevance.reshape(side, side).astype(np.float32),
    )
