"""Lung-field localiser: grey radiograph -> lung mask -> lung rectangle -> 224x224 model crop.

PneumoLLM crops the bounding rectangle of a lung segmentation and resizes it to 224x224.
The paper's segmenter (CheXmask) is not available offline, so this module ships its own: a
tiny U-Net (weights in ``lung_model/lung_unet.npz``, trained by ``training/lung_localiser.py``)
whose forward pass is written in numpy (no torch here), followed by a plain post-processing
(threshold, keep the lung-sized connected components, sanity checks). When nothing
plausible is found the whole image is used and :attr:`LungBox.fallback` is set.

Input contract everywhere: ``grey`` is float32 ``[H, W]`` in ``[0, 1]``, 1.0 = white (bone bright,
as displayed), any size (a few hundred to ~4300 px per side).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image
from scipy import ndimage

from pneumoview.errors import WeightsError

#: Default margin added on every side, as a fraction of the box width/height. The network is
#: trained on the exact mask rectangles; its typical error is to stop short of lung hidden
#: behind dense opacities. In grouped 5-fold cross-validation a margin of 0.01 gave both the
#: best mean and the best worst-case IoU (margins 0..0.05 in lung_model/MODEL_CARD.md).
DEFAULT_MARGIN: float = 0.01

#: Model input side (pixels) and probability threshold are stored with the weights.
WEIGHTS_FILE = "lung_unet.npz"

# Sanity limits on the kept lung region, as fractions of the (downsampled) image.
_MIN_AREA_FRACTION = 0.02
_MIN_SIDE_FRACTION = 0.12
_MIN_ASPECT = 0.35  # box width / box height
_MAX_ASPECT = 3.5
# A component is kept when its area is at least this fraction of the largest one.
_KEEP_RELATIVE_AREA = 0.1
_MAX_COMPONENTS = 2


@dataclass(frozen=True)
class LungBox:
    """Pixel rectangle of the lung fields in the input image; ``x1``/``y1`` are exclusive.

    ``fallback`` is True when no plausible lungs were found and the whole image is used
    (the UI must flag it). ``confidence`` in [0, 1] is the network's mean certainty over
    the kept lung pixels (0 for a fallback). ``reason`` explains a fallback.
    """

    x0: int
    y0: int
    x1: int
    y1: int
    fallback: bool
    confidence: float
    reason: str = ""

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def iou(self, other: LungBox) -> float:
        """Intersection over union of two rectangles (pixel areas)."""
        return box_iou((self.x0, self.y0, self.x1, self.y1), (other.x0, other.y0, other.x1, other.y1))


def box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """IoU of two ``(x0, y0, x1, y1)`` rectangles with exclusive ends."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding rectangle ``(x0, y0, x1, y1)`` (exclusive ends) of a bool mask, None if empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


# --------------------------------------------------------------------------- network


@dataclass(frozen=True)
class LungNet:
    """Weights of the tiny U-Net (BatchNorm folded into the convolutions), numpy float32.

    Layout (``channels = (c0, ..., cL)``): encoder level ``i`` = two 3x3 conv+ReLU to ``c_i``,
    then 2x2 max-pool (not after the last level); decoder level ``j`` (L-1 .. 0) = nearest 2x
    upsample, concatenate ``[upsampled, skip_j]``, two 3x3 conv+ReLU to ``c_j``; head = 1x1
    conv to one logit. Input ``[1, S, S]`` = the image resized to ``S x S`` and standardised
    (zero mean, unit std); output = lung probability ``[S, S]``. With ``flip_average`` the
    logits of the image and of its left-right mirror (mirrored back) are averaged.
    """

    input_size: int
    channels: tuple[int, ...]
    threshold: float
    params: dict[str, np.ndarray]
    flip_average: bool = False

    @classmethod
    def from_npz(cls, path: str | Path) -> LungNet:
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: np.asarray(data[k]) for k in data.files}
        except (OSError, ValueError) as exc:
            raise WeightsError(f"cannot read lung-localiser weights: {exc}", path=path) from exc
        if "config" not in arrays:
            raise WeightsError("lung-localiser weights lack their 'config' entry", path=path)
        config = json.loads(arrays.pop("config").tobytes().decode("utf-8"))
        params = {k: v.astype(np.float32) for k, v in arrays.items()}
        net = cls(
            input_size=int(config["input_size"]),
            channels=tuple(int(c) for c in config["channels"]),
            threshold=float(config.get("threshold", 0.5)),
            params=params,
            flip_average=bool(config.get("flip_average", False)),
        )
        missing = [k for k in net.expected_keys() if k not in params]
        if missing:
            raise WeightsError(f"lung-localiser weights lack {', '.join(missing[:3])}", path=path)
        return net

    def expected_keys(self) -> list[str]:
        keys = []
        n = len(self.channels)
        for i in range(n):
            keys += [f"enc{i}.0.w", f"enc{i}.0.b", f"enc{i}.1.w", f"enc{i}.1.b"]
        for j in range(n - 1):
            keys += [f"dec{j}.0.w", f"dec{j}.0.b", f"dec{j}.1.w", f"dec{j}.1.b"]
        return keys + ["head.w", "head.b"]

    def logits(self, x: np.ndarray) -> np.ndarray:
        """``x``: float32 ``[S, S]`` standardised image -> float32 ``[S, S]`` logits."""
        p = self.params
        n = len(self.channels)
        h = x[None].astype(np.float32, copy=False)
        skips = []
        for i in range(n):
            h = _conv3x3_relu(h, p[f"enc{i}.0.w"], p[f"enc{i}.0.b"])
            h = _conv3x3_relu(h, p[f"enc{i}.1.w"], p[f"enc{i}.1.b"])
            if i < n - 1:
                skips.append(h)
                h = _maxpool2(h)
        for j in range(n - 2, -1, -1):
            h = np.concatenate([_upsample2(h), skips[j]], axis=0)
            h = _conv3x3_relu(h, p[f"dec{j}.0.w"], p[f"dec{j}.0.b"])
            h = _conv3x3_relu(h, p[f"dec{j}.1.w"], p[f"dec{j}.1.b"])
        w = p["head.w"].reshape(1, -1)
        return (w @ h.reshape(h.shape[0], -1)).reshape(h.shape[1:]) + p["head.b"][0]

    def probability(self, grey: np.ndarray) -> np.ndarray:
        """``grey`` float32 ``[H, W]`` in [0, 1] -> lung probability ``[S, S]`` (float32)."""
        x = standardise(downsample(grey, self.input_size))
        if not self.flip_average:
            return _sigmoid(self.logits(x))
        # left-right flip averaging (a chest is nearly symmetric): steadier edges, 2 forwards
        flipped = self.logits(np.ascontiguousarray(x[:, ::-1]))[:, ::-1]
        return _sigmoid(0.5 * (self.logits(x) + flipped))


def _conv3x3_relu(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``x`` ``[C, H, W]``, ``w`` ``[O, C, 3, 3]``, zero padding 1 -> ReLU(conv + b) ``[O, H, W]``."""
    c, h, wd = x.shape
    o = w.shape[0]
    if c < 4:  # im2col (one small copy) is fastest for the input layer
        xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
        cols = sliding_window_view(xp, (3, 3), axis=(1, 2))  # [C, H, W, 3, 3]
        cols = cols.transpose(0, 3, 4, 1, 2).reshape(c * 9, h * wd)
        out = w.reshape(o, c * 9) @ cols
        out += b[:, None]
        np.maximum(out, 0.0, out=out)
        return out.reshape(o, h, wd)
    # Wider layers: nine matmuls on contiguous shifted views of the flattened padded image
    # (row pitch wd + 2; the two wrap-around columns per row are dropped at the end).
    pitch = wd + 2
    xp = np.zeros((c, h + 3, pitch), np.float32)
    xp[:, 1 : h + 1, 1 : wd + 1] = x
    flat = xp.reshape(c, -1)
    length = h * pitch
    out = np.empty((o, length), np.float32)
    out[:] = b[:, None]
    for dy in range(3):
        for dx in range(3):
            offset = dy * pitch + dx
            out += w[:, :, dy, dx] @ flat[:, offset : offset + length]
    np.maximum(out, 0.0, out=out)
    return out.reshape(o, h, pitch)[:, :, :wd]


def _maxpool2(x: np.ndarray) -> np.ndarray:
    c, h, w = x.shape
    return x.reshape(c, h // 2, 2, w // 2, 2).max(axis=(2, 4))


def _upsample2(x: np.ndarray) -> np.ndarray:
    return x.repeat(2, axis=1).repeat(2, axis=2)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return (0.5 * (1.0 + np.tanh(0.5 * z))).astype(np.float32)


def downsample(grey: np.ndarray, size: int) -> np.ndarray:
    """Resize ``[H, W]`` float to ``[size, size]`` (aspect not kept), antialiased, float32.

    Large reductions first take integer block means in numpy (keeping at least 2x the target
    size), because handing a 4k float image to Pillow costs ~0.2 s; the rest is Pillow's
    antialiased bilinear resize.
    """
    grey = np.asarray(grey, dtype=np.float32)
    h, w = grey.shape
    ky, kx = max(1, h // (2 * size)), max(1, w // (2 * size))
    if ky > 1 or kx > 1:
        grey = _block_mean(grey, ky, kx)
    image = Image.fromarray(np.ascontiguousarray(grey), mode="F")
    return np.array(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)


def _block_mean(a: np.ndarray, ky: int, kx: int) -> np.ndarray:
    """Mean of ``ky x kx`` blocks, float32; a ragged bottom/right edge becomes one smaller block."""
    return _block_mean_rows(_block_mean_rows(a, ky).T, kx).T


def _block_mean_rows(a: np.ndarray, k: int) -> np.ndarray:
    if k == 1:
        return a
    n = a.shape[0] // k
    out = a[: n * k].reshape(n, k, -1).sum(axis=1, dtype=np.float32)
    out *= np.float32(1.0 / k)
    rest = a.shape[0] - n * k
    if rest:
        out = np.concatenate([out, a[n * k :].mean(axis=0, dtype=np.float32, keepdims=True)])
    return out


def standardise(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit standard deviation (a flat image stays all zeros)."""
    x = x.astype(np.float32, copy=True)
    x -= x.mean()
    std = float(x.std())
    if std > 1e-6:
        x /= std
    return x


@lru_cache(maxsize=1)
def load_network(path: str | None = None) -> LungNet:
    """The shipped lung network (cached); ``path`` overrides the packaged weights."""
    if path is not None:
        return LungNet.from_npz(path)
    ref = resources.files("pneumoview.dicom").joinpath("lung_model").joinpath(WEIGHTS_FILE)
    with resources.as_file(ref) as weights:
        if not Path(weights).is_file():
            raise WeightsError("the packaged lung-localiser weights are missing", path=weights)
        return LungNet.from_npz(weights)


# --------------------------------------------------------------------------- post-processing


@dataclass(frozen=True)
class _Region:
    mask: np.ndarray  # bool [S, S], kept components
    reason: str  # "" when plausible
    confidence: float


def _region_from_probability(prob: np.ndarray, threshold: float) -> tuple[_Region, np.ndarray]:
    """2x bilinear upsampling of the network's probabilities (sub-pixel box edges), then :func:`_lung_region`."""
    fine = ndimage.zoom(prob, 2, order=1, mode="nearest", grid_mode=True)
    return _lung_region(fine, threshold), fine


def _lung_region(prob: np.ndarray, threshold: float) -> _Region:
    """Threshold, keep the (at most two) lung-sized components, check plausibility."""
    s = prob.shape[0] * prob.shape[1]
    raw = prob > threshold
    labels, count = ndimage.label(raw)
    if count == 0:
        return _Region(raw, "no lung-like region found", 0.0)
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    order = np.argsort(areas)[::-1]
    keep = [int(order[0]) + 1]
    for k in order[1:_MAX_COMPONENTS]:
        if areas[k] >= _KEEP_RELATIVE_AREA * areas[order[0]]:
            keep.append(int(k) + 1)
    mask = np.isin(labels, keep)
    mask = ndimage.binary_fill_holes(mask)
    confidence = float(np.clip(2.0 * prob[mask].mean() - 1.0, 0.0, 1.0))
    area = mask.sum() / s
    x0, y0, x1, y1 = mask_box(mask)  # type: ignore[misc]  # mask is not empty here
    w = (x1 - x0) / prob.shape[1]
    h = (y1 - y0) / prob.shape[0]
    if area < _MIN_AREA_FRACTION:
        return _Region(mask, f"lung region too small ({area:.1%} of the image)", confidence)
    if min(w, h) < _MIN_SIDE_FRACTION:
        return _Region(mask, f"lung region too narrow ({w:.0%} x {h:.0%} of the image)", confidence)
    aspect = w / h  # in units of the image's own width/height
    if not _MIN_ASPECT <= aspect <= _MAX_ASPECT:
        return _Region(mask, f"lung region has an implausible shape (width/height {aspect:.2f})", confidence)
    return _Region(mask, "", confidence)


# --------------------------------------------------------------------------- public API


#: Images with a side shorter than this (pixels) are not searched: the whole image is the box.
MIN_SEARCH_SIDE = 16


def _check_grey(grey: np.ndarray) -> np.ndarray:
    grey = np.asarray(grey)
    if grey.ndim != 2 or grey.shape[0] < 1 or grey.shape[1] < 1:
        raise ValueError(f"expected a grey image [H, W], got shape {grey.shape}")
    return grey.astype(np.float32, copy=False)


def _whole_image(shape: tuple[int, ...], reason: str) -> LungBox:
    h, w = (int(shape[0]), int(shape[1])) if len(shape) >= 2 else (1, 1)
    return LungBox(0, 0, max(1, w), max(1, h), fallback=True, confidence=0.0, reason=reason)


def lung_mask(grey: np.ndarray) -> np.ndarray:
    """Lung fields of ``grey`` (float32 ``[H, W]`` in [0, 1]) as a bool ``[H, W]`` mask.

    The mask is the network's kept lung components at its input resolution, scaled back to
    the image with nearest-neighbour sampling; empty when no plausible lungs are found.
    """
    grey = _check_grey(grey)
    net = load_network()
    region, _ = _region_from_probability(net.probability(grey), net.threshold)
    small = region.mask if not region.reason else np.zeros_like(region.mask)
    h, w = grey.shape
    s = small.shape[0]
    rows = np.minimum((np.arange(h) + 0.5) * s / h, s - 1).astype(np.intp)
    cols = np.minimum((np.arange(w) + 0.5) * s / w, s - 1).astype(np.intp)
    return small[rows[:, None], cols[None, :]]


def locate_lungs(grey: np.ndarray, *, margin: float = DEFAULT_MARGIN) -> LungBox:
    """Lung rectangle of ``grey`` (float32 ``[H, W]`` in [0, 1], 1.0 = white), in its pixels.

    ``margin`` widens the box on every side by that fraction of its width/height (clipped to
    the image). Falls back to the whole image with ``fallback=True`` when nothing plausible
    is found (blank, noise, not a chest radiograph), and never raises on a degenerate image:
    not 2-D, a side under :data:`MIN_SEARCH_SIDE` pixels (1xN, Nx1, tiny) or non-finite values
    also give the whole-image fallback, with a ``reason``. ``margin < 0`` is a ValueError.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    grey = np.asarray(grey)
    if grey.ndim != 2 or grey.size == 0:
        return _whole_image(grey.shape if grey.ndim >= 2 else (1, 1), f"not a 2-D image (shape {grey.shape})")
    if min(grey.shape) < MIN_SEARCH_SIDE:
        return _whole_image(grey.shape, f"image too small to search ({grey.shape[1]}x{grey.shape[0]})")
    grey = grey.astype(np.float32, copy=False)
    if not np.isfinite(grey.sum(dtype=np.float64)):
        return _whole_image(grey.shape, "non-finite pixel values")
    net = load_network()
    return box_from_probability(net.probability(grey), grey.shape, threshold=net.threshold, margin=margin)


def box_from_probability(
    prob: np.ndarray, shape: tuple[int, ...], *, threshold: float = 0.5, margin: float = DEFAULT_MARGIN
) -> LungBox:
    """Post-process a lung probability map ``[S, S]`` into a :class:`LungBox` in an image of ``shape`` ``(H, W)``."""
    h, w = int(shape[0]), int(shape[1])
    region, prob = _region_from_probability(prob, threshold)
    if region.reason:
        return LungBox(0, 0, w, h, fallback=True, confidence=0.0, reason=region.reason)
    sy, sx = prob.shape
    cx0, cy0, cx1, cy1 = mask_box(region.mask)  # type: ignore[misc]
    fx0, fy0, fx1, fy1 = cx0 / sx, cy0 / sy, cx1 / sx, cy1 / sy
    mx, my = margin * (fx1 - fx0), margin * (fy1 - fy0)
    x0 = max(0, int(math.floor((fx0 - mx) * w + 0.5)))
    y0 = max(0, int(math.floor((fy0 - my) * h + 0.5)))
    x1 = min(w, int(math.floor((fx1 + mx) * w + 0.5)))
    y1 = min(h, int(math.floor((fy1 + my) * h + 0.5)))
    if x1 <= x0 or y1 <= y0:  # only for images a few pixels wide
        return LungBox(0, 0, w, h, fallback=True, confidence=0.0, reason="image too small")
    return LungBox(x0, y0, x1, y1, fallback=False, confidence=region.confidence)


def crop_to_model(grey: np.ndarray, box: LungBox, size: int = 224) -> np.ndarray:
    """Crop ``box`` out of ``grey`` and resize it to float32 ``[size, size]`` in [0, 1].

    The crop is stretched to a square (as in PneumoLLM: the lung rectangle resized to
    224x224), with an antialiased bilinear resize.
    """
    grey = _check_grey(grey)
    h, w = grey.shape
    x0, y0 = max(0, box.x0), max(0, box.y0)
    x1, y1 = min(w, box.x1), min(h, box.y1)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {box} does not overlap the image {w}x{h}")
    crop = downsample(grey[y0:y1, x0:x1], size)
    return np.clip(crop, 0.0, 1.0, out=crop)
