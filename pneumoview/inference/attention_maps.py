"""Model-attention maps as arrays, without torch: the label, the map type, resizing, encoding and overlays.

:mod:`pneumoview.inference.heatmap` computes a map in the analysis worker; the window decodes and
overlays it with these functions (numpy only), so the GUI process never imports torch. Every map is
a model-attention view (:data:`HEATMAP_LABEL`), never a lesion finding.
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
    weight = (alpha * heat)[..., None]
    rgb = grey[..., None] * (1 - weight) + heat_ramp(heat) * weight
    return np.round(rgb * 255).astype(np.uint8)


def heat_ramp(heat: np.ndarray) -> np.ndarray:
    """The black-red-yellow colour ramp: heat [H, W] in [0, 1] -> float32 RGB [H, W, 3] in [0, 1]."""
    heat = np.clip(np.asarray(heat, np.float32), 0, 1)
    return np.stack([np.clip(2 * heat, 0, 1), np.clip(2 * heat - 1, 0, 1), np.zeros_like(heat)], axis=-1)


def heat_rgba(heat: np.ndarray, *, alpha: float = 0.55) -> np.ndarray:
    """An overlay layer: the ramp of ``heat`` [H, W] in [0, 1] with opacity ``alpha * heat`` ->
    uint8 RGBA [H, W, 4] (zero heat is fully transparent), drawn over the image by the viewer."""
    heat = np.clip(np.asarray(heat, np.float32), 0, 1)
    rgba = np.concatenate([heat_ramp(heat), (alpha * heat)[..., None]], axis=-1)
    return np.round(rgba * 255).astype(np.uint8)
