"""Image-quality gate, per image, before analysis: pure functions (numpy/scipy; no torch, no Qt).

Checks, each giving a stable reason code (:data:`FAILING` codes put the image below the gate; the
others are cautions shown beside the result):

* exposure: the fraction of the 224x224 lung crop clipped to white (under-penetrated) or to
  black (over-exposed / burnt out) -- ``exposure-clipped-bright`` / ``exposure-clipped-dark``;
* resolution: Pixel Spacing (0028,0030) or Imager Pixel Spacing (0018,1164) coarser than the ILO
  guidance for digital chest radiographs (pixel size at most 0.2 mm) -- ``pixel-spacing-coarse``,
  none in the header -- ``pixel-spacing-unknown`` (caution); matrix (0028,0010)/(0028,0011)
  smaller than the set minimum -- ``matrix-too-small``;
* lungs cut off: the localiser's lung fields (its mask, else its rectangle) touching an image
  edge -- ``lungs-cut-off``;
* projection from the header: View Position (0018,5101) lateral -- ``lateral-view``, AP --
  ``ap-view`` (caution: heart magnified, scapulae over the lungs);
* rotation from the localiser: the two lung fields' areas too unequal (above the set limit) --
  ``possible-rotation``; only one lung field found -- ``one-lung-field``;
* the localiser fell back to the whole image -- ``fallback-crop``.

Thresholds are :class:`QualityThresholds` (the settings' ``quality`` overrides, see
:func:`thresholds_from`). :func:`quality_codes` is the one-line answer for the CSV.

:func:`gate` is the one place an image to be analysed is graded: the analysis worker and
``pneumoview analyze`` (through :func:`pneumoview.service.analysis_worker.predict_results`, before the
forward pass) and the viewer's badge call it on the prepared model input and the file's header.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from scipy import ndimage

from pneumoview.dicom.files import has_dicom_preamble
from pneumoview.dicom.lungs import LungBox, lung_mask, mask_box
from pneumoview.dicom.suitability import LATERAL_VIEWS
from pneumoview.errors import PneumoViewError

EXPOSURE_BRIGHT = "exposure-clipped-bright"
EXPOSURE_DARK = "exposure-clipped-dark"
SPACING_COARSE = "pixel-spacing-coarse"
SPACING_UNKNOWN = "pixel-spacing-unknown"
MATRIX_SMALL = "matrix-too-small"
LUNGS_CUT_OFF = "lungs-cut-off"
LATERAL = "lateral-view"
AP_VIEW = "ap-view"
ROTATION = "possible-rotation"
ONE_LUNG = "one-lung-field"
FALLBACK = "fallback-crop"

#: Codes that put an image below the gate (its result is marked); the rest are cautions.
FAILING = frozenset(
    {EXPOSURE_BRIGHT, EXPOSURE_DARK, SPACING_COARSE, MATRIX_SMALL, LUNGS_CUT_OFF, LATERAL, ROTATION, ONE_LUNG, FALLBACK}
)
#: What each code means, for tooltips and the README.
DESCRIPTIONS: dict[str, str] = {
    EXPOSURE_BRIGHT: "much of the lung crop is clipped to white (under-penetrated)",
    EXPOSURE_DARK: "much of the lung crop is clipped to black (over-exposed)",
    SPACING_COARSE: "pixel spacing coarser than the gate allows",
    SPACING_UNKNOWN: "the header states no pixel spacing",
    MATRIX_SMALL: "image matrix smaller than the gate allows",
    LUNGS_CUT_OFF: "the lung fields touch the image edge (possibly cut off)",
    LATERAL: "lateral projection (View Position)",
    AP_VIEW: "AP projection (View Position): heart magnified",
    ROTATION: "left and right lung fields very unequal: the patient may be rotated",
    ONE_LUNG: "only one lung field found",
    FALLBACK: "lungs not found: the whole image was analysed",
}


@dataclass(frozen=True)
class QualityThresholds:
    """The gate's limits (settings ``quality`` overrides any of them by name)."""

    clip_level: float = 0.02  # grey values within this of 0 or 1 count as clipped
    max_clipped_bright: float = 0.10  # fraction of the lung crop
    max_clipped_dark: float = 0.10
    max_pixel_spacing_mm: float = 0.2
    min_matrix: int = 1024  # pixels on the shorter side
    edge_tolerance: float = 0.005  # fraction of the side within which the lung box "touches" an edge
    max_lung_asymmetry: float = 0.40  # |L - R| / (L + R) of the lung areas

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"quality threshold {f.name} must be a finite number >= 0, not {value!r}")
        for name in ("clip_level", "max_clipped_bright", "max_clipped_dark", "edge_tolerance", "max_lung_asymmetry"):
            if getattr(self, name) > 1:
                raise ValueError(f"quality threshold {name} is a fraction (at most 1)")


def thresholds_from(overrides: Mapping[str, Any] | None) -> QualityThresholds:
    """Defaults with the named overrides (e.g. the settings' ``quality`` object); ValueError for
    an unknown name or a bad value."""
    overrides = dict(overrides or {})
    names = {f.name for f in dataclasses.fields(QualityThresholds)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown quality threshold(s): {', '.join(unknown)}")
    if "min_matrix" in overrides and isinstance(overrides["min_matrix"], float):
        if not overrides["min_matrix"].is_integer():
            raise ValueError("quality threshold min_matrix must be a whole number")
        overrides["min_matrix"] = int(overrides["min_matrix"])
    thresholds = QualityThresholds(**overrides)
    thresholds.validate()
    return thresholds


@dataclass(frozen=True)
class HeaderFacts:
    """The header fields the gate reads (all optional: a PNG has none)."""

    rows: int | None = None  # (0028,0010)
    columns: int | None = None  # (0028,0011)
    pixel_spacing: tuple[float, float] | None = None  # (0028,0030) or (0018,1164), mm
    view_position: str = ""  # (0018,5101)

    @classmethod
    def from_record(cls, record: Any) -> HeaderFacts:
        """From ``pneumoview.dicom.scan.ImageRecord`` (or anything with the same attribute names)."""
        spacing = getattr(record, "pixel_spacing", None)
        return cls(
            rows=getattr(record, "rows", None) or None,
            columns=getattr(record, "columns", None) or None,
            pixel_spacing=tuple(spacing) if spacing else None,
            view_position=str(getattr(record, "view_position", "") or ""),
        )


@dataclass(frozen=True)
class QualityReport:
    """Reason codes (in check order) and the measured values they came from."""

    codes: tuple[str, ...]
    measures: dict[str, float | None] = field(default_factory=dict)

    @property
    def below_gate(self) -> bool:
        return any(code in FAILING for code in self.codes)

    @property
    def cautions(self) -> tuple[str, ...]:
        return tuple(code for code in self.codes if code not in FAILING)


# --------------------------------------------------------------------------- the checks
def exposure(crop: np.ndarray, t: QualityThresholds) -> tuple[list[str], dict[str, float | None]]:
    """Clipped fractions of the lung crop (float [S, S] in [0, 1], 1.0 = white)."""
    crop = np.asarray(crop, dtype=np.float32)
    if crop.ndim != 2 or crop.size == 0 or not np.isfinite(crop).all():
        raise ValueError("the lung crop must be a finite 2-D grey image")
    bright = float(np.mean(crop >= 1.0 - t.clip_level))
    dark = float(np.mean(crop <= t.clip_level))
    codes = []
    if bright > t.max_clipped_bright:
        codes.append(EXPOSURE_BRIGHT)
    if dark > t.max_clipped_dark:
        codes.append(EXPOSURE_DARK)
    return codes, {"clipped_bright": bright, "clipped_dark": dark}


def resolution(header: HeaderFacts, t: QualityThresholds) -> tuple[list[str], dict[str, float | None]]:
    codes = []
    spacing = max(header.pixel_spacing) if header.pixel_spacing else None
    if spacing is None:
        codes.append(SPACING_UNKNOWN)
    elif spacing > t.max_pixel_spacing_mm:
        codes.append(SPACING_COARSE)
    side = min(header.rows, header.columns) if header.rows and header.columns else None
    if side is not None and side < t.min_matrix:
        codes.append(MATRIX_SMALL)
    return codes, {"pixel_spacing_mm": spacing, "matrix_min_side": None if side is None else float(side)}


def lungs_cut_off(
    box: LungBox, image_shape: Sequence[int], t: QualityThresholds, mask: np.ndarray | None = None
) -> list[str]:
    """The lung fields within ``edge_tolerance`` of an image edge: the mask's own rectangle when
    the mask is given (the crop box carries a margin that is clipped at the edges), else the box."""
    if box.fallback:
        return []
    h, w = int(image_shape[0]), int(image_shape[1])
    rect = (box.x0, box.y0, box.x1, box.y1)
    if mask is not None:
        found = mask_box(np.asarray(mask, dtype=bool))
        if found is None:
            return []
        mh, mw = mask.shape
        rect = (found[0] * w / mw, found[1] * h / mh, found[2] * w / mw, found[3] * h / mh)
    tx, ty = t.edge_tolerance * w, t.edge_tolerance * h
    touches = rect[0] <= tx or rect[1] <= ty or rect[2] >= w - tx or rect[3] >= h - ty
    return [LUNGS_CUT_OFF] if touches else []


def projection(header: HeaderFacts) -> list[str]:
    view = header.view_position.strip().upper()
    if view in LATERAL_VIEWS:
        return [LATERAL]
    return [AP_VIEW] if view == "AP" else []


def rotation(mask: np.ndarray | None, t: QualityThresholds) -> tuple[list[str], dict[str, float | None]]:
    """Area asymmetry |A1 - A2| / (A1 + A2) of the two largest components of the lung mask
    (bool [H, W]); a rotated patient projects one lung field much narrower than the other."""
    if mask is None:
        return [], {"lung_asymmetry": None}
    mask = np.asarray(mask, dtype=bool)
    labels, count = ndimage.label(mask)
    if count == 0:
        return [], {"lung_asymmetry": None}
    sizes = np.sort(np.bincount(labels.ravel())[1:])[::-1]
    if count < 2 or sizes[1] < 0.1 * sizes[0]:
        return [ONE_LUNG], {"lung_asymmetry": None}
    asym = float((sizes[0] - sizes[1]) / (sizes[0] + sizes[1]))
    return ([ROTATION] if asym > t.max_lung_asymmetry else []), {"lung_asymmetry": asym}


def assess(
    crop: np.ndarray,
    box: LungBox,
    image_shape: Sequence[int],
    *,
    header: HeaderFacts | None = None,
    mask: np.ndarray | None = None,
    thresholds: QualityThresholds | None = None,
) -> QualityReport:
    """All checks. ``crop``: the 224x224 lung crop the model sees; ``box``/``image_shape``: the
    localiser's rectangle in the grey image; ``mask``: the localiser's lung mask (for rotation);
    ``header``: None for a file without a DICOM header (resolution then unknown)."""
    t = thresholds or QualityThresholds()
    codes, measures = exposure(crop, t)
    res_codes, res_measures = resolution(header or HeaderFacts(), t)
    codes += res_codes
    measures.update(res_measures)
    codes += lungs_cut_off(box, image_shape, t, mask)
    codes += projection(header or HeaderFacts())
    rot_codes, rot_measures = rotation(None if box.fallback else mask, t)
    codes += rot_codes
    measures.update(rot_measures)
    if box.fallback:
        codes.append(FALLBACK)
    return QualityReport(tuple(dict.fromkeys(codes)), measures)


def quality_codes(
    crop: np.ndarray,
    box: LungBox,
    image_shape: Sequence[int],
    *,
    header: HeaderFacts | None = None,
    mask: np.ndarray | None = None,
    thresholds: QualityThresholds | None = None,
) -> list[str]:
    """The reason codes of :func:`assess`, for the CSV's quality column (empty list: passed, no caution)."""
    return list(assess(crop, box, image_shape, header=header, mask=mask, thresholds=thresholds).codes)


def assess_grey(
    grey: np.ndarray,
    crop: np.ndarray,
    box: LungBox,
    *,
    header: HeaderFacts | None = None,
    thresholds: QualityThresholds | None = None,
) -> QualityReport:
    """:func:`assess` for a grey image [H, W] in [0, 1] (the localiser's mask is computed here)."""
    mask = None if box.fallback else lung_mask(grey)
    return assess(crop, box, grey.shape, header=header, mask=mask, thresholds=thresholds)


def badge_text(report: QualityReport) -> str:
    """One line for the window: below the gate, cautions, or passed."""
    if report.below_gate:
        failing = [c for c in report.codes if c in FAILING]
        return f"Image quality: BELOW THE GATE ({', '.join(failing)})"
    if report.codes:
        return f"Image quality: caution ({', '.join(report.codes)})"
    return "Image quality: passed"


# --------------------------------------------------------------------------- the one gate
class PreparedImage(Protocol):
    """What the gate reads of a prepared image (``pneumoview.preprocess.ModelInput``)."""

    crop: np.ndarray  # float32 [S, S] in [0, 1]
    box: LungBox
    image_shape: tuple[int, int]  # (H, W) of the grey image the box refers to
    mask: np.ndarray | None  # the localiser's lung mask, bool, any resolution (None: not kept)


def header_facts(path: str | os.PathLike[str]) -> HeaderFacts | None:
    """The gate's header fields of a DICOM file (a header-only read, no pixel data); None for a
    picture without a DICOM header or a header that cannot be read."""
    if not has_dicom_preamble(path):
        return None
    from pneumoview.dicom.scan import read_record

    try:
        return HeaderFacts.from_record(read_record(path))
    except PneumoViewError:
        return None


def gate(
    prepared: PreparedImage,
    path: str | os.PathLike[str] | None,
    thresholds: QualityThresholds | None = None,
    *,
    header: HeaderFacts | None = None,
) -> QualityReport:
    """The image-quality gate of one image, before analysis: :func:`assess` on the prepared model input
    (crop, lung box, lung mask) with the file's header (read from ``path`` unless ``header`` is given)."""
    if header is None and path is not None:
        header = header_facts(path)
    mask = getattr(prepared, "mask", None)
    return assess(prepared.crop, prepared.box, prepared.image_shape, header=header, mask=mask, thresholds=thresholds)
