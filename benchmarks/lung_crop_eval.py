"""Lung-rectangle quality on real radiographs with lung masks.

    python benchmarks/lung_crop_eval.py DIR [--margin M] [--verbose]

Reads ``DIR/labels.csv`` (columns ``file``, ``mask_file``; masks are 0/255 PNGs). For every image
it compares the rectangle that :func:`pneumoview.dicom.lungs.locate_lungs` returns (the same
LungBox, default margin, that the model crop uses) with the bounding rectangle of ``mask > 127``.
Baselines measured in the same run: the whole-image rectangle and a plain Otsu threshold with
morphology. Timing (localisation only, and file -> 224x224 crop) is printed per run.
The LAST line is ``mean_iou=0.xxx min_iou=0.xxx n=NN`` for the localiser.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from pneumoview.dicom.lungs import DEFAULT_MARGIN, box_iou, crop_to_model, locate_lungs, mask_box
from pneumoview.imageio import load_grey


def otsu_box(grey: np.ndarray) -> tuple[int, int, int, int]:
    """Baseline: pixels darker than Otsu's threshold (at 256x256), opened and closed, two largest components."""
    small = np.asarray(Image.fromarray((grey * 255).astype(np.uint8)).resize((256, 256)), dtype=np.uint8)
    hist = np.bincount(small.ravel(), minlength=256).astype(float)
    p = hist / hist.sum()
    omega, mu = np.cumsum(p), np.cumsum(p * np.arange(256))
    between = (mu[-1] * omega - mu) ** 2 / np.maximum(omega * (1 - omega), 1e-12)
    dark = ndimage.binary_closing(ndimage.binary_opening(small < int(np.argmax(between)), iterations=3), iterations=3)
    labels, n = ndimage.label(dark)
    h, w = grey.shape
    if n == 0:
        return 0, 0, w, h
    areas = np.bincount(labels.ravel())[1:]
    box = mask_box(np.isin(labels, np.argsort(areas)[::-1][:2] + 1))
    assert box is not None
    x0, y0, x1, y1 = box
    return int(x0 * w / 256), int(y0 * h / 256), int(round(x1 * w / 256)), int(round(y1 * h / 256))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN)
    parser.add_argument("--verbose", action="store_true", help="one line per image")
    args = parser.parse_args(argv)
    with (args.directory / "labels.csv").open(newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("mask_file")]
    ious, whole, otsu, fallbacks, t_locate, t_crop = [], [], [], 0, [], []
    locate_lungs(np.zeros((64, 64), np.float32))  # load the weights outside the timing
    for row in rows:
        grey = load_grey(args.directory / row["file"]).pixels  # float32 [H, W] in [0, 1]
        with Image.open(args.directory / row["mask_file"]) as mask_image:
            truth = mask_box(np.asarray(mask_image.convert("L")) > 127)
        if truth is None:
            print(f"skip {row['file']}: empty mask", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        box = locate_lungs(grey, margin=args.margin)
        t1 = time.perf_counter()
        crop = crop_to_model(grey, box)
        t2 = time.perf_counter()
        assert crop.shape == (224, 224)
        t_locate.append(t1 - t0)
        t_crop.append(t2 - t0)
        iou = box_iou((box.x0, box.y0, box.x1, box.y1), truth)
        ious.append(iou)
        fallbacks += box.fallback
        h, w = grey.shape
        whole.append(box_iou((0, 0, w, h), truth))
        otsu.append(box_iou(otsu_box(grey), truth))
        if args.verbose:
            flag = " FALLBACK " + box.reason if box.fallback else ""
            print(f"{row['file']}: {w}x{h} iou={iou:.3f} conf={box.confidence:.2f} {t_locate[-1] * 1000:.0f} ms{flag}")
    n = len(ious)
    print(f"baseline whole-image: mean_iou={np.mean(whole):.3f} min_iou={np.min(whole):.3f}")
    print(f"baseline otsu+morphology: mean_iou={np.mean(otsu):.3f} min_iou={np.min(otsu):.3f}")
    print(
        f"fallbacks={fallbacks}/{n}; locate_lungs median {np.median(t_locate) * 1000:.1f} ms "
        f"(max {np.max(t_locate) * 1000:.1f} ms); locate+crop median {np.median(t_crop) * 1000:.1f} ms "
        f"(max {np.max(t_crop) * 1000:.1f} ms); margin={args.margin}"
    )
    print(f"mean_iou={np.mean(ious):.3f} min_iou={np.min(ious):.3f} n={n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
