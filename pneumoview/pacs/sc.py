"""The lung crop the model saw, as a DICOM Secondary Capture (highdicom ``SCImage``), annotations burned in.

The pixels are the 224x224 crop of :mod:`pneumoview.preprocess` (float32 ``[0, 1]``, 1.0 = white),
scaled to :data:`SC_SIZE` and stored MONOCHROME2, 8 bits. Burned in (PS3.3 C.7.6.1.1.6 Burned In
Annotation = YES): the finding and probability at the bottom and, for the demo model,
"DEMO - not a diagnosis" at the top. A heatmap, where one is given (float ``[0, 1]``, same shape as
the crop), is blended into the picture before the text.

Patient / study identity is copied from the source header by ``SCImage.from_ref_dataset``; the
Patient Orientation (0020,0020) is the source's own (empty where the source has none: the crop keeps
the source's display orientation, it is not re-oriented).
"""

from __future__ import annotations

import warnings

import numpy as np
from pydicom.dataset import Dataset

from pneumoview.labels import DEMO_MARK
from pneumoview.pacs.sr import MANUFACTURER, SR_SERIES_NUMBER, ModelResult, _series_description, with_identity
from pneumoview.pacs.uids import derived_uid

#: Side of the written picture in pixels (the 224x224 crop, enlarged so the text stays legible).
SC_SIZE = 512
SC_SERIES_NUMBER = SR_SERIES_NUMBER + 1


def render_crop(crop: np.ndarray, result: ModelResult, heatmap: np.ndarray | None = None) -> np.ndarray:
    """uint8 ``[SC_SIZE, SC_SIZE]``: the crop, the heatmap blended in, the annotations burned in."""
    from PIL import Image, ImageDraw, ImageFont

    crop = np.asarray(crop, dtype=np.float32)
    if crop.ndim != 2 or not np.isfinite(crop).all():
        raise ValueError("the crop must be a finite 2-D array")
    unit = np.clip(crop, 0.0, 1.0)
    if heatmap is not None:
        heat = np.asarray(heatmap, dtype=np.float32)
        if heat.shape != unit.shape or not np.isfinite(heat).all():
            raise ValueError("the heatmap must be finite and have the crop's shape")
        unit = np.clip(0.6 * unit + 0.4 * np.clip(heat, 0.0, 1.0), 0.0, 1.0)
    picture = Image.fromarray(np.round(unit * 255.0).astype(np.uint8), mode="L").resize(
        (SC_SIZE, SC_SIZE), Image.Resampling.BILINEAR
    )
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=18) if hasattr(ImageFont, "FreeTypeFont") else ImageFont.load_default()
    finding = "present" if result.positive else "absent"
    lines = [(f"pneumoconiosis {finding}: p={result.probability:.3f}, threshold {result.threshold:.2f}", SC_SIZE - 30)]
    if result.demo:
        lines.insert(0, (DEMO_MARK, 8))
    for text, top in lines:
        box = draw.textbbox((8, top), text, font=font)
        draw.rectangle((box[0] - 4, box[1] - 3, box[2] + 4, box[3] + 3), fill=0)
        draw.text((8, top), text, fill=255, font=font)
    return np.asarray(picture, dtype=np.uint8)


def build_sc(source: Dataset, crop: np.ndarray, result: ModelResult, heatmap: np.ndarray | None = None) -> Dataset:
    """Secondary Capture Image Storage of the lung crop, in ``source``'s study, in PneumoView's SC series."""
    import highdicom as hd

    result.check()
    source = with_identity(source)
    pixels = render_crop(crop, result, heatmap)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # highdicom's notes on the source's person-name forms
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=source,
            pixel_array=pixels,
            photometric_interpretation="MONOCHROME2",
            bits_allocated=8,
            coordinate_system="PATIENT",
            series_instance_uid=derived_uid("sc-series", source.StudyInstanceUID, result.bundle_fingerprint),
            series_number=SC_SERIES_NUMBER,
            sop_instance_uid=derived_uid(
                "sc", source.SOPInstanceUID, result.bundle_fingerprint, f"{result.threshold:.6f}"
            ),
            instance_number=1,
            manufacturer=MANUFACTURER,
            patient_orientation=("L", "F"),  # replaced below by the source's own value (or empty)
            transfer_syntax_uid="1.2.840.10008.1.2.1",
        )
    orientation = source.get("PatientOrientation")
    # Type 2 / 2C: the source's values, or present and empty (None) where the source has none
    sc.PatientOrientation = list(orientation) if orientation and len(orientation) == 2 else None  # type: ignore[assignment]
    sc.Laterality = source.get("Laterality") or None  # type: ignore[assignment]
    sc.BurnedInAnnotation = "YES"
    sc.SeriesDescription = _series_description("lung crop", result.demo)
    sc.DerivationDescription = f"lung crop seen by {result.model_name or 'the model'}"[:1024]
    if result.demo:
        sc.ImageComments = DEMO_MARK
    return sc
