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

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np

HEATMAP_LABEL = "Model attention (where the score came from) - not a lesion finding"
METHOD = "gradient x activation of the ViT patch tokens entering the last source block (captum)"


@dataclass(frozen=True)
class Heatmap:
    """``crop_map``: float32 [S, S] in [0, 1] over the model's crop (all zeros when no patch
    raised the score: ``empty``)."""

    crop_map: np.ndarray
    probability: float
    method: str = METHOD
    label: str = HEATMAP_LABEL
    block: int = -1  # the ViT block whose input tokens were attributed (0-based)
    patch_relevance: np.ndarray | None = None  # float32 [h, w] before upsampling and scaling

    @property
    def empty(self) -> bool:
        return not bool(np.any(self.crop_map > 0))

    def on_image(self, box: Any, image_shape: tuple[int, int]) -> np.ndarray:
        """The map in the full image's pixels (float32 [H, W]); ``box`` is the crop's LungBox."""
        h, w = int(image_shape[0]), int(image_shape[1])
        out = np.zeros((h, w), np.float32)
        x0, y0, x1, y1 = max(0, box.x0), max(0, box.y0), min(w, box.x1), min(h, box.y1)
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"box {box} does not overlap the image {w}x{h}")
        out[y0:y1, x0:x1] = resize_bilinear(self.crop_map, (y1 - y0, x1 - x0))
        return out


def resize_bilinear(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float [h, w] map to ``shape`` with half-pixel centres (as
    ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``); numpy only, so
    the window can map a heatmap without torch."""
    src = np.asarray(image, dtype=np.float32)
    h, w = src.shape
    out_h, out_w = int(shape[0]), int(shape[1])

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        low = np.floor(pos).astype(np.intp)
        return low, np.minimum(low + 1, n_in - 1), (pos - low).astype(np.float32)

    y0, y1, wy = axis(h, out_h)
    x0, x1, wx = axis(w, out_w)
    top = src[y0][:, x0] * (1 - wx) + src[y0][:, x1] * wx
    bottom = src[y1][:, x0] * (1 - wx) + src[y1][:, x1] * wx
    return (top * (1 - wy)[:, None] + bottom * wy[:, None]).astype(np.float32)


def encode_map(crop_map: np.ndarray) -> str:
    """[S, S] in [0, 1] -> base64 of uint8 levels (the analysis worker's ``heatmap`` event)."""
    levels = np.round(np.clip(crop_map, 0, 1) * 255).astype(np.uint8)
    return base64.b64encode(levels.tobytes()).decode("ascii")


def decode_map(text: str, size: int) -> np.ndarray:
    """Inverse of :func:`encode_map` for a ``size`` x ``size`` map (float32 in [0, 1])."""
    levels = np.frombuffer(base64.b64decode(text), dtype=np.uint8)
    if levels.size != size * size:
        raise ValueError(f"heatmap has {levels.size} values, not {size}x{size}")
    return levels.reshape(size, size).astype(np.float32) / 255.0


def overlay_rgb(grey: np.ndarray, heat: np.ndarray, *, alpha: float = 0.45) -> np.ndarray:
    """Grey [H, W] in [0, 1] with ``heat`` [H, W] in [0, 1] blended in as a black-red-yellow
    ramp -> uint8 RGB [H, W, 3]. Zero heat leaves the grey untouched."""
    grey = np.clip(np.asarray(grey, np.float32), 0, 1)
    heat = np.clip(np.asarray(heat, np.float32), 0, 1)
    if grey.shape != heat.shape:
        raise ValueError(f"grey {grey.shape} and heat {heat.shape} differ in shape")
    ramp = np.stack([np.clip(2 * heat, 0, 1), np.clip(2 * heat - 1, 0, 1), np.zeros_like(heat)], axis=-1)
    weight = (alpha * heat)[..., None]
    rgb = grey[..., None] * (1 - weight) + ramp * weight
    return np.round(rgb * 255).astype(np.uint8)


def compute_heatmap(engine: Any, crop: np.ndarray) -> Heatmap:
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

    model = engine.model
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
    side = round(relevance.size ** 0.5)
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
    return Heatmap(crop_map.astype(np.float32), probability, block=block,
                   patch_relevance=relevance.reshape(side, side).astype(np.float32))
