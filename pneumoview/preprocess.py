"""Exactly what the model sees: file -> grey [0, 1] -> lung rectangle -> 224x224 crop.

Inference and training both call :func:`prepare` (or :func:`prepare_grey` on an image already
loaded), so the two can never drift apart. The lung localiser is
:mod:`pneumoview.dicom.lungs`; this module only chains the steps and keeps their notes.
:func:`prepare` runs the whole chain in a decoder worker process (:mod:`pneumoview.dicom.sandbox`),
so only the small crop crosses back to the caller.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pneumoview.dicom import sandbox
from pneumoview.dicom.lungs import LungBox, crop_to_model, locate_lungs, lung_mask
from pneumoview.imageio import GreyImage, check_path, load_grey_in_process

#: Side of the model's square input (CLIP ViT-L/14 at 224 px).
MODEL_SIZE = 224
#: Longest side of the lung mask kept with a :class:`ModelInput` (for the quality gate's edge and
#: rotation checks, :mod:`pneumoview.dicom.quality`); the full-size mask is subsampled to it.
MASK_SIDE = 256


@dataclass
class ModelInput:
    """One image ready for the model's normalisation (mean/std are the model's business)."""

    crop: np.ndarray  # float32 [size, size] in [0, 1], 1.0 = white
    box: LungBox  # the lung rectangle in the grey image's pixels (fallback=True: whole image)
    source: Path
    notes: list[str] = field(default_factory=list)
    image_shape: tuple[int, int] = (0, 0)  # (H, W) of the grey image the box refers to
    mask: np.ndarray | None = None  # bool lung mask, subsampled to <= MASK_SIDE (None: lungs not found)


def prepare(path: str | os.PathLike[str], *, size: int = MODEL_SIZE, margin: float | None = None) -> ModelInput:
    """:func:`~pneumoview.imageio.load_grey` -> :func:`locate_lungs` -> :func:`crop_to_model`, sandboxed.

    ``margin=None`` uses the localiser's default margin. Raises the PneumoViewError
    subclasses of :func:`~pneumoview.imageio.load_grey` (DecoderError included).
    """
    path = Path(path)
    check_path(path)
    meta, arrays = sandbox.run(prepare_task, path, size=int(size), margin=margin)
    box = meta["box"]
    shape = meta["image_shape"]
    return ModelInput(
        crop=arrays["crop"],
        box=LungBox(
            int(box["x0"]),
            int(box["y0"]),
            int(box["x1"]),
            int(box["y1"]),
            fallback=bool(box["fallback"]),
            confidence=float(box["confidence"]),
            reason=str(box["reason"]),
        ),
        source=path,
        notes=[str(n) for n in meta["notes"]],
        image_shape=(int(shape[0]), int(shape[1])),
        mask=arrays.get("mask"),
    )


def prepare_in_process(
    path: str | os.PathLike[str], *, size: int = MODEL_SIZE, margin: float | None = None
) -> ModelInput:
    """:func:`prepare` in the calling process (the decoder worker's side)."""
    return prepare_grey(load_grey_in_process(path), size=size, margin=margin)


def prepare_task(path: Path, *, size: int, margin: float | None) -> tuple[dict[str, object], dict[str, np.ndarray]]:
    """Sandbox task: :func:`prepare_in_process` as JSON + the crop."""
    model_input = prepare_in_process(path, size=size, margin=margin)
    meta: dict[str, object] = {
        "box": dataclasses.asdict(model_input.box),
        "notes": list(model_input.notes),
        "image_shape": list(model_input.image_shape),
    }
    arrays = {"crop": model_input.crop}
    if model_input.mask is not None:
        arrays["mask"] = model_input.mask
    return meta, arrays


def prepare_grey(image: GreyImage, *, size: int = MODEL_SIZE, margin: float | None = None) -> ModelInput:
    """Locate the lungs in ``image.pixels`` (float32 HxW [0, 1]) and crop/resize to ``size``."""
    grey = image.pixels
    box = locate_lungs(grey) if margin is None else locate_lungs(grey, margin=margin)
    crop = crop_to_model(grey, box, size)
    notes = list(image.notes)
    if box.fallback:
        notes.append(f"lungs not found ({box.reason or 'no plausible lung fields'}): whole image used")
    return ModelInput(
        crop=crop,
        box=box,
        source=image.source,
        notes=notes,
        image_shape=(int(grey.shape[0]), int(grey.shape[1])),
        mask=None if box.fallback else small_lung_mask(grey),
    )


def small_lung_mask(grey: np.ndarray, side: int = MASK_SIDE) -> np.ndarray:
    """:func:`~pneumoview.dicom.lungs.lung_mask` of ``grey`` subsampled (every k-th pixel) to at most ``side``."""
    mask = lung_mask(grey)
    step = max(1, -(-max(mask.shape) // side))
    return np.ascontiguousarray(mask[::step, ::step])
