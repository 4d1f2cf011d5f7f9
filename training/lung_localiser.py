"""Train the tiny lung-field U-Net that :mod:`pneumoview.dicom.lungs` runs in numpy.

Data: a folder with ``labels.csv`` (columns ``file``, ``mask_file``, optional ``group_id``) and
0/255 lung masks, e.g. ``../shared/data/cxr`` (60 radiographs, lungVAE masks, CC BY-NC-SA).
The images are read once, shrunk to ``cache_size`` and augmented heavily on the fly (zoom,
crop, aspect, rotation, flips, gamma, blur, noise, JPEG, burnt-in text, arrows, borders,
plus blank/noise negatives), then the network is trained on ``input_size`` squares with
BCE + Dice. BatchNorm is folded into the convolutions on export (``.npz``, numpy only).

CLI (one CPU thread, ~3-7 minutes on a busy 2-core machine)::

    python -m training.lung_localiser --data ../shared/data/cxr --out pneumoview/dicom/lung_model/lung_unet.npz
    python -m training.lung_localiser --data ../shared/data/cxr --cv 5      # grouped cross-validation
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import random
import string
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from pneumoview.dicom import lungs
from pneumoview.errors import TrainingDataError
from pneumoview.imageio import load_grey


@dataclass
class LocaliserConfig:
    """Everything that decides the trained network (saved in the weights' config)."""

    input_size: int = 64
    channels: tuple[int, ...] = (8, 16, 32, 64)
    cache_size: int = 256
    steps: int = 1200
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    negative_fraction: float = 0.05
    opacity_fraction: float = 0.4
    threshold: float = 0.5
    flip_average: bool = True
    seed: int = 0
    threads: int = 1  # one intra-op thread: far faster than 2 on a busy 2-core machine


# --------------------------------------------------------------------------- data


def load_mask_file(path: Path) -> np.ndarray:
    """Bool ``[H, W]``: mask pixels > 127."""
    with Image.open(path) as image:
        return np.asarray(image.convert("L")) > 127


@dataclass
class MaskedSet:
    """Radiographs with lung masks, held small.

    ``images``/``masks``: float32 ``[N, C, C]`` at ``cache_size`` (training source);
    ``inputs``: float32 ``[N, S, S]``, exactly what the localiser sees at inference;
    ``boxes``: int ``[N, 4]`` mask rectangles ``(x0, y0, x1, y1)`` in original pixels;
    ``shapes``: ``[N, 2]`` original ``(H, W)``; ``groups``/``names``: per image.
    """

    images: np.ndarray
    masks: np.ndarray
    inputs: np.ndarray
    boxes: np.ndarray
    shapes: np.ndarray
    groups: list[str]
    names: list[str]

    def subset(self, index: Sequence[int] | np.ndarray) -> MaskedSet:
        idx = np.asarray(index, dtype=np.intp)
        return MaskedSet(
            self.images[idx],
            self.masks[idx],
            self.inputs[idx],
            self.boxes[idx],
            self.shapes[idx],
            [self.groups[i] for i in idx],
            [self.names[i] for i in idx],
        )


def load_masked_set(directory: Path, *, cache_size: int = 256, input_size: int = 64) -> MaskedSet:
    """Read ``directory/labels.csv`` (``file``, ``mask_file``[, ``group_id``]); raises TrainingDataError."""
    labels = directory / "labels.csv"
    if not labels.is_file():
        raise TrainingDataError("no labels.csv in the lung-mask folder", path=directory)
    with labels.open(newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("mask_file")]
    if not rows:
        raise TrainingDataError("labels.csv lists no images with a mask_file", path=labels)
    images, masks, inputs, boxes, shapes, groups, names = [], [], [], [], [], [], []
    for row in rows:
        grey = load_grey(directory / row["file"]).pixels  # float32 [H, W] in [0, 1], 1 = white
        mask = load_mask_file(directory / row["mask_file"])
        if mask.shape != grey.shape:
            raise TrainingDataError(
                f"mask {mask.shape} and image {grey.shape} differ in size", path=directory / row["mask_file"]
            )
        box = lungs.mask_box(mask)
        if box is None:
            raise TrainingDataError("empty lung mask", path=directory / row["mask_file"])
        images.append(lungs.downsample(grey, cache_size))
        masks.append(lungs.downsample(mask.astype(np.float32), cache_size))
        inputs.append(lungs.downsample(grey, input_size))
        boxes.append(box)
        shapes.append(grey.shape)
        groups.append(row.get("group_id") or row["file"])
        names.append(row["file"])
    return MaskedSet(
        np.stack(images),
        np.stack(masks),
        np.stack(inputs),
        np.asarray(boxes, dtype=np.int64),
        np.asarray(shapes, dtype=np.int64),
        groups,
        names,
    )


# --------------------------------------------------------------------------- network


class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class LungUNet(nn.Module):
    """The torch twin of :class:`pneumoview.dicom.lungs.LungNet`: ``[B, 1, S, S]`` -> logits ``[B, 1, S, S]``."""

    def __init__(self, channels: Sequence[int] = (8, 16, 32, 48, 64)) -> None:
        super().__init__()
        self.channels = tuple(int(c) for c in channels)
        chans = self.channels
        self.enc = nn.ModuleList(_DoubleConv(1 if i == 0 else chans[i - 1], c) for i, c in enumerate(chans))
        self.dec = nn.ModuleList(_DoubleConv(chans[j + 1] + chans[j], chans[j]) for j in range(len(chans) - 1))
        self.head = nn.Conv2d(chans[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        n = len(self.enc)
        for i, block in enumerate(self.enc):
            x = block(x)
            if i < n - 1:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for j in range(n - 2, -1, -1):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = self.dec[j](torch.cat([x, skips[j]], dim=1))
        return self.head(x)


def _fold(block: _DoubleConv, k: int) -> tuple[np.ndarray, np.ndarray]:
    conv: nn.Conv2d = block[3 * k]  # type: ignore[assignment]
    bn: nn.BatchNorm2d = block[3 * k + 1]  # type: ignore[assignment]
    assert bn.running_var is not None and bn.running_mean is not None  # track_running_stats (the default)
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    w = conv.weight.detach() * scale[:, None, None, None]
    b = bn.bias.detach() - bn.running_mean * scale
    return w.numpy().astype(np.float32), b.numpy().astype(np.float32)


def export_arrays(model: LungUNet, config: LocaliserConfig, extra: dict | None = None) -> dict[str, np.ndarray]:
    """BatchNorm-folded float32 arrays + a ``config`` JSON byte array, as read by ``LungNet.from_npz``."""
    arrays: dict[str, np.ndarray] = {}
    for prefix, blocks in (("enc", model.enc), ("dec", model.dec)):
        for i, block in enumerate(blocks):
            assert isinstance(block, _DoubleConv)
            for k in range(2):
                arrays[f"{prefix}{i}.{k}.w"], arrays[f"{prefix}{i}.{k}.b"] = _fold(block, k)
    arrays["head.w"] = model.head.weight.detach().numpy().astype(np.float32)
    assert model.head.bias is not None
    arrays["head.b"] = model.head.bias.detach().numpy().astype(np.float32)
    meta = {
        "input_size": config.input_size,
        "channels": list(model.channels),
        "threshold": config.threshold,
        "flip_average": config.flip_average,
        "training": asdict(config) | (extra or {}),
    }
    arrays["config"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    return arrays


def save_npz(model: LungUNet, config: LocaliserConfig, path: Path, extra: dict | None = None) -> Path:
    """Atomic write of the exported weights (``.npz``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        # numpy's stub: a **dict could hold "allow_pickle" (a bool); these keys are array names
        np.savez_compressed(handle, **export_arrays(model, config, extra))  # type: ignore[arg-type]
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------- augmentation


_WORDS = [
    "PA",
    "AP",
    "L",
    "R",
    "SUPINE",
    "PORTABLE",
    "ERECT",
    "MOBILE",
    "AP ERECT",
    "SITTING UPRIGHT",
    "Day 3",
    "A",
    "B",
    "C",
]


def _random_text(rng: random.Random) -> str:
    if rng.random() < 0.6:
        return rng.choice(_WORDS)
    return "".join(rng.choice(string.ascii_uppercase + string.digits + " ") for _ in range(rng.randint(1, 10)))


def _burn_in(image: np.ndarray, rng: random.Random) -> np.ndarray:
    """Draw case-report clutter (text, arrows, markers, panel borders) and JPEG artefacts on ``[S, S]`` in [0, 1]."""
    s = image.shape[0]
    pil = Image.fromarray(np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    draw = ImageDraw.Draw(pil)
    for _ in range(rng.choice([0, 0, 1, 1, 2, 3, 4])):
        kind = rng.random()
        fill = rng.choice([255, 255, 240, 0, 20, rng.randint(0, 255)])
        x, y = rng.randint(-5, s - 5), rng.randint(-5, s - 5)
        if kind < 0.5:
            font = ImageFont.load_default(size=rng.randint(5, 22))
            draw.text((x, y), _random_text(rng), fill=fill, font=font)
        elif kind < 0.75:  # arrow
            length, angle = rng.randint(6, 30), rng.uniform(0, 2 * math.pi)
            x2, y2 = x + length * math.cos(angle), y + length * math.sin(angle)
            width = rng.randint(1, 3)
            draw.line((x, y, x2, y2), fill=fill, width=width)
            a1, a2 = angle + 2.6, angle - 2.6
            draw.polygon(
                [
                    (x2, y2),
                    (x2 + 5 * math.cos(a1), y2 + 5 * math.sin(a1)),
                    (x2 + 5 * math.cos(a2), y2 + 5 * math.sin(a2)),
                ],
                fill=fill,
            )
        elif kind < 0.9:  # marker / label box / electrode
            r = rng.randint(2, 10)
            if rng.random() < 0.5:
                draw.rectangle((x, y, x + r * rng.uniform(1, 3), y + r), fill=fill)
            else:
                draw.ellipse((x, y, x + r, y + r), outline=fill, width=rng.randint(1, 2))
        else:  # tube / wire
            pts = [(x, y)]
            for _ in range(rng.randint(2, 5)):
                pts.append((pts[-1][0] + rng.randint(-30, 30), pts[-1][1] + rng.randint(-30, 30)))
            draw.line(pts, fill=fill, width=rng.randint(1, 2))
    if rng.random() < 0.35:
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=rng.randint(15, 85))
        buffer.seek(0)
        pil = Image.open(buffer).convert("L")
    return np.asarray(pil, dtype=np.float32) / 255.0


def _negative(s: int, rng: np.random.Generator) -> np.ndarray:
    """A non-radiograph: blank, noise, smooth noise, gradient or blocks."""
    kind = rng.integers(0, 5)
    if kind == 0:
        return np.full((s, s), rng.uniform(0, 1), np.float32)
    if kind == 1:
        return rng.uniform(0, 1, (s, s)).astype(np.float32)
    if kind == 2:
        k = int(rng.integers(2, 17))
        coarse = rng.uniform(0, 1, (k, k)).astype(np.float32)
        return np.asarray(Image.fromarray(coarse, mode="F").resize((s, s), Image.Resampling.BICUBIC), np.float32).clip(
            0, 1
        )
    if kind == 3:
        yy, xx = np.mgrid[0:s, 0:s] / s
        a, b = rng.uniform(-1, 1, 2)
        g = a * xx + b * yy
        return ((g - g.min()) / max(np.ptp(g), 1e-6)).astype(np.float32)
    img = np.full((s, s), rng.uniform(0, 1), np.float32)
    for _ in range(int(rng.integers(1, 6))):
        y0, x0 = rng.integers(0, s, 2)
        img[y0 : y0 + rng.integers(5, s // 2), x0 : x0 + rng.integers(5, s // 2)] = rng.uniform(0, 1)
    return img


class Augmenter:
    """Random training batches ``(x [B,1,S,S] standardised, y [B,1,S,S] in {0,1})`` from a MaskedSet."""

    def __init__(self, data: MaskedSet, config: LocaliserConfig, seed: int) -> None:
        self.images = torch.from_numpy(data.images).unsqueeze(1)
        self.masks = torch.from_numpy(data.masks).unsqueeze(1)
        self.config = config
        self.gen = torch.Generator().manual_seed(seed)
        self.np_rng = np.random.default_rng(seed)
        self.py_rng = random.Random(seed)

    def _u(self, n: int, lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=self.gen)

    def _opacities(self, img: torch.Tensor, msk: torch.Tensor) -> torch.Tensor:
        """Whiten parts of the lungs (consolidation, effusion, ARDS white-out) without changing the mask.

        The lungVAE targets cover the lung behind opacities, so the network must learn to
        impute lung where the film is white.
        """
        b, _, c, _ = img.shape
        g = 64
        small = F.adaptive_avg_pool2d(msk, g)[:, 0]
        yy, xx = torch.meshgrid(
            torch.arange(g, dtype=torch.float32), torch.arange(g, dtype=torch.float32), indexing="ij"
        )
        blobs = torch.zeros(b, g, g)
        for k in range(b):
            if float(torch.rand(1, generator=self.gen)) > self.config.opacity_fraction:
                continue
            inside = torch.nonzero(small[k] > 0.5)
            if inside.shape[0] == 0:
                continue
            for _ in range(int(torch.randint(1, 4, (1,), generator=self.gen))):
                cy, cx = inside[int(torch.randint(0, inside.shape[0], (1,), generator=self.gen))].tolist()
                ry, rx = self._u(2, 3.0, 18.0).tolist()
                blobs[k] += torch.exp(-(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2))
            if float(torch.rand(1, generator=self.gen)) < 0.4:  # lower-zone white-out
                rows = torch.nonzero(small[k].amax(dim=1) > 0.5)[:, 0].float()
                cut = float(rows.min() + (rows.max() - rows.min()) * self._u(1, 0.3, 0.9))
                blobs[k] += torch.sigmoid((yy - cut) / 2.0) * (small[k] > 0.2).float()
        strength = self._u(b, 0.4, 1.0)[:, None, None]
        level = self._u(b, 0.55, 0.95)[:, None, None, None]
        alpha = F.interpolate(
            (blobs.clamp(0, 1) * strength)[:, None], size=(c, c), mode="bilinear", align_corners=False
        )
        return img * (1 - alpha) + level * alpha

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        b, s = cfg.batch_size, cfg.input_size
        idx = torch.randint(0, self.images.shape[0], (b,), generator=self.gen)
        img, msk = self.images[idx], self.masks[idx]
        img = self._opacities(img, msk)
        # gamma before the geometry (display curve of the source)
        gamma = torch.exp(self._u(b, -0.6, 0.6))[:, None, None, None]
        img = img.clamp(0, 1) ** gamma
        # geometry: zoom in/out with independent x/y scale (crops, aspect), rotation, shift
        sx = torch.exp(self._u(b, math.log(0.6), math.log(1.35)))
        sy = sx * torch.exp(self._u(b, -0.2, 0.2))
        rot = self._u(b, -0.2, 0.2)
        tx, ty = self._u(b, -0.25, 0.25), self._u(b, -0.25, 0.25)
        flip = torch.where(torch.rand(b, generator=self.gen) < 0.5, -1.0, 1.0)
        cos, sin = torch.cos(rot), torch.sin(rot)
        theta = torch.stack(
            [torch.stack([sx * cos * flip, -sy * sin, tx], 1), torch.stack([sx * sin * flip, sy * cos, ty], 1)], 1
        )
        grid = F.affine_grid(theta, [b, 1, s, s], align_corners=False)
        img = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        valid = F.grid_sample(torch.ones_like(msk), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        msk = F.grid_sample(msk, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        fill = torch.where(torch.rand(b, generator=self.gen) < 0.65, 0.0, torch.rand(b, generator=self.gen))
        fill = torch.where(torch.rand(b, generator=self.gen) < 0.15, 1.0, fill)[:, None, None, None]
        img = img + (1 - valid) * fill
        # contrast / brightness, blur, noise
        img = (
            (img - 0.5) * self._u(b, 0.6, 1.4)[:, None, None, None] + 0.5 + self._u(b, -0.15, 0.15)[:, None, None, None]
        )
        out = img.clamp(0, 1).squeeze(1).numpy().copy()
        target = (msk.squeeze(1).numpy() > 0.5).astype(np.float32)
        for k in range(b):
            if self.np_rng.random() < cfg.negative_fraction:
                out[k] = _negative(s, self.np_rng)
                target[k] = 0.0
            out[k] = _burn_in(out[k], self.py_rng)
        x = torch.from_numpy(out).unsqueeze(1)
        sigma = float(self.np_rng.uniform(0, 1.2))
        if sigma > 0.3:
            x = _gaussian_blur(x, sigma)
        x = x + torch.randn(x.shape, generator=self.gen) * self._u(b, 0, 0.05)[:, None, None, None]
        x = x - x.mean(dim=(2, 3), keepdim=True)
        x = x / x.std(dim=(2, 3), keepdim=True).clamp_min(1e-6)
        return x, torch.from_numpy(target).unsqueeze(1)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, int(math.ceil(2 * sigma)))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))


# --------------------------------------------------------------------------- training


def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    return bce + dice


def train_localiser(
    data: MaskedSet,
    config: LocaliserConfig,
    *,
    progress: Callable[[int, int, float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> tuple[LungUNet, list[float]]:
    """Train on ``data``; returns the model (eval mode) and the per-step losses. ``progress(step, steps, loss)``."""
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    model = LungUNet(config.channels)
    optim = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=config.lr, total_steps=config.steps, pct_start=0.15)
    aug = Augmenter(data, config, config.seed)
    losses: list[float] = []
    model.train()
    for step in range(config.steps):
        if cancel is not None and cancel():
            from pneumoview.errors import CancelledError

            raise CancelledError("lung-localiser training cancelled")
        x, y = aug.batch()
        loss = _loss(model(x), y)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        sched.step()
        losses.append(loss.item())
        if progress is not None:
            progress(step + 1, config.steps, losses[-1])
    model.eval()
    return model, losses


@torch.no_grad()
def predict_probabilities(model: LungUNet, inputs: np.ndarray, *, flip_average: bool = True) -> np.ndarray:
    """Lung probabilities ``[N, S, S]`` for raw network inputs ``[N, S, S]`` (standardised here), as ``LungNet``."""
    model.eval()
    x = torch.from_numpy(np.stack([lungs.standardise(a) for a in inputs])).unsqueeze(1)
    logits = model(x)
    if flip_average:
        logits = 0.5 * (logits + model(x.flip(-1)).flip(-1))
    return torch.sigmoid(logits).squeeze(1).numpy()


def predict_boxes(
    model: LungUNet,
    data: MaskedSet,
    *,
    threshold: float = 0.5,
    margin: float = lungs.DEFAULT_MARGIN,
    flip_average: bool = True,
) -> list[lungs.LungBox]:
    """Lung boxes for ``data.inputs`` through the same post-processing as ``locate_lungs``."""
    prob = predict_probabilities(model, data.inputs, flip_average=flip_average)
    return [
        lungs.box_from_probability(p, tuple(shape), threshold=threshold, margin=margin)
        for p, shape in zip(prob, data.shapes)
    ]


def box_ious(boxes: Sequence[lungs.LungBox], truth: np.ndarray) -> np.ndarray:
    return np.array(
        [
            lungs.box_iou((b.x0, b.y0, b.x1, b.y1), (int(t[0]), int(t[1]), int(t[2]), int(t[3])))
            for b, t in zip(boxes, truth)
        ]
    )


def group_folds(groups: Sequence[str], k: int, seed: int = 0) -> list[np.ndarray]:
    """Indices of ``k`` held-out folds; every group lies in exactly one fold."""
    unique = sorted(set(groups))
    random.Random(seed).shuffle(unique)
    fold_of = {g: i % k for i, g in enumerate(unique)}
    return [np.array([i for i, g in enumerate(groups) if fold_of[g] == f]) for f in range(k)]


def cross_validate(
    data: MaskedSet,
    config: LocaliserConfig,
    k: int = 5,
    *,
    margins: Sequence[float] = (0.0,),
    log: Callable[[str], None] = print,
    out_of_fold: dict[str, np.ndarray] | None = None,
) -> dict[float, np.ndarray]:
    """Grouped k-fold CV: per margin, the IoU of every image predicted by the model that did not see its group.

    ``out_of_fold``, when given, receives the held-out probability maps (``"prob"``, and
    ``"prob_noflip"`` without flip averaging), for studying the post-processing.
    """
    ious = {m: np.zeros(len(data.names)) for m in margins}
    if out_of_fold is not None:
        out_of_fold["prob"] = np.zeros(data.inputs.shape, np.float32)
        out_of_fold["prob_noflip"] = np.zeros(data.inputs.shape, np.float32)
    for f, held in enumerate(group_folds(data.groups, k, config.seed)):
        train_idx = np.setdiff1d(np.arange(len(data.names)), held)
        t0 = time.time()
        model, losses = train_localiser(data.subset(train_idx), config, progress=_log_every(100, log, f"fold {f + 1} "))
        held_set = data.subset(held)
        if out_of_fold is not None:
            out_of_fold["prob"][held] = predict_probabilities(model, held_set.inputs, flip_average=True)
            out_of_fold["prob_noflip"][held] = predict_probabilities(model, held_set.inputs, flip_average=False)
        for m in margins:
            ious[m][held] = box_ious(
                predict_boxes(model, held_set, threshold=config.threshold, margin=m, flip_average=config.flip_average),
                held_set.boxes,
            )
        log(
            f"fold {f + 1}/{k}: n={len(held)} mean_iou={ious[margins[0]][held].mean():.3f} "
            f"min_iou={ious[margins[0]][held].min():.3f} loss={np.mean(losses[-50:]):.3f} ({time.time() - t0:.0f} s)"
        )
    return ious


def _log_every(n: int, log: Callable[[str], None], prefix: str = "") -> Callable[[int, int, float], None]:
    start = time.time()

    def progress(step: int, steps: int, loss: float) -> None:
        if step % n == 0 or step == steps:
            log(f"{prefix}step {step}/{steps} loss {loss:.3f} ({time.time() - start:.0f} s)")

    return progress


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with labels.csv (file, mask_file[, group_id])")
    parser.add_argument("--out", type=Path, help="write the exported weights (.npz) here")
    parser.add_argument(
        "--cv", type=int, default=0, help="grouped k-fold cross-validation instead of (or before) the final fit"
    )
    parser.add_argument("--steps", type=int, default=LocaliserConfig.steps)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=LocaliserConfig.threads)
    parser.add_argument("--input-size", type=int, default=LocaliserConfig.input_size)
    parser.add_argument("--channels", type=str, default=",".join(str(c) for c in LocaliserConfig.channels))
    parser.add_argument("--save-cv", type=Path, help="save the out-of-fold probability maps here (.npz)")
    parser.add_argument("--margins", type=str, default="0,0.01,0.02,0.03,0.05")
    args = parser.parse_args(argv)
    config = LocaliserConfig(
        steps=args.steps,
        seed=args.seed,
        threads=args.threads,
        input_size=args.input_size,
        channels=tuple(int(c) for c in args.channels.split(",")),
    )
    torch.set_num_threads(config.threads)
    t0 = time.time()
    data = load_masked_set(args.data, cache_size=config.cache_size, input_size=config.input_size)
    print(f"loaded {len(data.names)} images in {time.time() - t0:.1f} s")
    summary: dict = {"data": str(args.data), "n_images": len(data.names)}
    if args.cv:
        margins = [float(m) for m in args.margins.split(",")]
        oof: dict[str, np.ndarray] = {}
        ious = cross_validate(data, config, args.cv, margins=margins, out_of_fold=oof)
        if args.save_cv:
            np.savez_compressed(args.save_cv, boxes=data.boxes, shapes=data.shapes, names=np.array(data.names), **oof)  # type: ignore[arg-type]  # numpy's stub: **oof could hold "allow_pickle"
        for m in margins:
            print(
                f"cv{args.cv} margin={m:.2f}: mean_iou={ious[m].mean():.3f} min_iou={ious[m].min():.3f} n={len(ious[m])}"
            )
        worst = np.argsort(ious[margins[0]])[:5]
        print("worst:", ", ".join(f"{data.names[i]}={ious[margins[0]][i]:.3f}" for i in worst))
        summary[f"cv{args.cv}_mean_iou"] = round(float(ious[margins[0]].mean()), 4)
        summary[f"cv{args.cv}_min_iou"] = round(float(ious[margins[0]].min()), 4)
    if args.out:
        t1 = time.time()
        model, losses = train_localiser(data, config, progress=_log_every(100, print))
        train_ious = box_ious(
            predict_boxes(model, data, threshold=config.threshold, flip_average=config.flip_average), data.boxes
        )
        summary |= {
            "train_mean_iou": round(float(train_ious.mean()), 4),
            "train_min_iou": round(float(train_ious.min()), 4),
            "train_seconds": round(time.time() - t1, 1),
        }
        save_npz(model, config, args.out, summary)
        print(
            f"trained in {time.time() - t1:.0f} s: train mean_iou={train_ious.mean():.3f} min_iou={train_ious.min():.3f}; wrote {args.out}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
