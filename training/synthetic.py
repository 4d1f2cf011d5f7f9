"""A small synthetic chest-like data set that a working training pipeline must learn.

Each image is a grey "radiograph": dark surroundings, a brighter body ellipse, two dark lung
fields and a spine. In "pneumoconiosis" images the lung fields are opacified (brighter) and carry
small bright nodules; in "normal" ones they are dark and smooth. Position, size,
contrast and noise vary per patient and per image, so it is not a constant-pixel task, but a
pipeline whose data, labels, loss, optimiser and evaluation are right learns it in a few epochs
even with random frozen backbones. Used by the CI learning test and the benchmarks.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
from PIL import Image


def chest_image(rng: np.random.Generator, *, sick: bool, size: int = 256) -> np.ndarray:
    """uint8 [size, size] chest-like picture (lungs dark; nodules bright when ``sick``)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    cx = 0.5 + rng.uniform(-0.04, 0.04)
    cy = 0.52 + rng.uniform(-0.04, 0.04)
    scale = rng.uniform(0.9, 1.08)
    img = np.full((size, size), rng.uniform(0.05, 0.15), np.float32)
    body = ((xx - cx) / (0.42 * scale)) ** 2 + ((yy - cy) / (0.47 * scale)) ** 2 < 1
    img[body] = rng.uniform(0.62, 0.78)
    lungs = np.zeros((size, size), bool)
    for side in (-1, 1):
        lx = cx + side * 0.17 * scale
        lungs |= ((xx - lx) / (0.12 * scale)) ** 2 + ((yy - (cy - 0.04)) / (0.3 * scale)) ** 2 < 1
    # The class signal: opacified (bright) vs clear (dark) lung fields, plus nodules when sick.
    lung_level = rng.uniform(0.45, 0.6) if sick else rng.uniform(0.12, 0.27)
    img[lungs] = lung_level
    if sick:
        n = int(rng.integers(60, 110))
        ys, xs = np.nonzero(lungs)
        pick = rng.integers(0, ys.size, n)
        radius = max(1.5, size / 110)
        for y, x in zip(ys[pick], xs[pick], strict=True):
            d2 = (yy * size - y) ** 2 + (xx * size - x) ** 2
            img += (rng.uniform(0.25, 0.45) * np.exp(-d2 / (2 * radius**2))).astype(np.float32) * lungs
    spine = np.abs(xx - cx) < 0.03 * scale
    img[spine & body] = np.maximum(img[spine & body], 0.85)
    img += rng.normal(0, 0.03, img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def make_synthetic_dataset(
    root: str | os.PathLike[str],
    *,
    n_patients: int = 20,
    images_per_patient: int = 2,
    size: int = 256,
    seed: int = 0,
) -> Path:
    """Write PNGs under ``root/images`` and ``root/labels.csv`` (path,label,patient_id); returns the CSV.

    Half the patients are "pneumoconiosis", half "normal".
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        sick = p % 2 == 0
        label = "pneumoconiosis" if sick else "normal"
        for k in range(images_per_patient):
            name = f"images/p{p:03d}_{k}.png"
            Image.fromarray(chest_image(rng, sick=sick, size=size)).save(root / name)
            rows.append({"path": name, "label": label, "patient_id": f"SYN{p:03d}"})
    csv_path = root / "labels.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "label", "patient_id"])
        writer.writeheader()
        writer.writerows(rows)
    return csv_path


def small_config_file(path: str | os.PathLike[str], *, image_size: int = 64, base: str = "pneumollm-tiny") -> Path:
    """Write the tiny architecture with a smaller input (``image_size`` px) as a JSON config.

    Same code path and layer structure as ``pneumollm-tiny``, ~12x fewer vision tokens: what the
    CI learning test and the resume test use to stay well under a minute on two CPU cores.
    """
    import json

    from pneumoview.inference.config import load_config

    data = load_config(base).to_dict()
    data["name"] = f"{base}-{image_size}px"
    data["vision"]["image_size"] = image_size
    data["preprocessing"]["image_size"] = image_size
    data["description"] = f"{base} with {image_size}px input (tests, benchmarks)"
    path = Path(path)
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path
