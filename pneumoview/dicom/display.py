"""Display pipeline as small pure functions, in the order of the DICOM standard (PS3.4 N.2).

stored values --:func:`modality_lut`--> modality values (float32; (0028,1052/1053) or (0028,3000))
--:func:`apply_window` / :func:`apply_voi_lut_item`--> [0, 1] (VOI: (0028,1050/1051/1056) or (0028,3010))
--:func:`invert_unit` if MONOCHROME1 (0028,0004) or Presentation LUT Shape INVERSE (2050,0020)-->
--:func:`unit_to_uint8`--> 8-bit for the screen.

Every function takes and returns NumPy arrays with the dtype stated in its docstring and
never modifies its input unless it says ``out=``. :func:`load_display_image` runs the part
that does not depend on the user's window once per image, in a decoder worker process
(:mod:`pneumoview.dicom.sandbox`); :func:`render` runs the rest.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

import numpy as np
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import correct_ambiguous_vr, write_dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi

from pneumoview.dicom.pixels import DECODER_ERRORS, DecodedFrame, decode_first_frame
from pneumoview.dicom.readonly import check_regular_file
from pneumoview.errors import PixelDecodeError

#: VOILUTFunction (0028,1056) values this module implements (PS3.3 C.11.2.1.3).
VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
#: ``Window.function`` for an item of the VOI LUT Sequence (0028,3010).
LUT_FUNCTION = "LUT"
#: Percentiles of the automatic window when the file has none.
AUTO_PERCENTILES = (0.5, 99.5)
#: Greyscale weights (ITU-R BT.601 luma) for colour -> grey.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class Window:
    """A VOI transform: window centre/width (0028,1050/1051) with its function (0028,1056).

    ``function == "LUT"`` selects item ``lut_index`` of the VOI LUT Sequence instead;
    its centre/width then only describe the LUT's input range (for a UI to start dragging from).
    """

    center: float
    width: float
    function: str = "LINEAR"
    name: str = ""
    lut_index: int | None = None


@dataclass
class DisplayImage:
    """What a viewer needs about one image, computed once (off the GUI thread)."""

    values: np.ndarray  # float32 HxW after the modality LUT (first frame; grey)
    photometric: str  # PhotometricInterpretation (0028,0004) of the file
    invert: bool  # True for MONOCHROME1 or Presentation LUT Shape INVERSE
    windows: list[Window]  # presets from the file: windows first, then VOI LUT items
    default_window: Window  # the file's first preset, else an automatic one
    notes: list[str] = field(default_factory=list)  # "multi-frame: first of 12 frames shown", ...
    voi_lut: Dataset | None = None  # holds VOILUTSequence for Window(function="LUT")
    source: Path | None = None
    number_of_frames: int = 1
    stored_bits: int = 0


# ----------------------------------------------------------------------------- modality


def modality_lut(stored: np.ndarray, header: Dataset) -> np.ndarray:
    """Stored values (any integer/float dtype, HxW) -> modality values, float32 HxW.

    Rescale Slope/Intercept (0028,1053/1052) in float32; a Modality LUT Sequence (0028,3000)
    goes through ``pydicom.pixels.apply_modality_lut``. No modality transform: a float32 copy.
    """
    if "ModalityLUTSequence" in header and header.ModalityLUTSequence:
        return np.asarray(apply_modality_lut(stored, header), dtype=np.float32)
    slope = _float(header.get("RescaleSlope"), 1.0)
    intercept = _float(header.get("RescaleIntercept"), 0.0)
    return rescale(stored, slope, intercept)


def rescale(stored: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """``stored * slope + intercept`` as a new float32 array (no float64 temporary)."""
    out = stored.astype(np.float32, copy=True)
    if slope != 1.0:
        np.multiply(out, np.float32(slope), out=out)
    if intercept != 0.0:
        np.add(out, np.float32(intercept), out=out)
    return out


# ----------------------------------------------------------------------------- VOI


def windows_from_header(header: Dataset) -> list[Window]:
    """Window presets of (0028,1050/1051/1055/1056), then one per VOI LUT Sequence item.

    Multi-valued centre/width give one preset each; invalid pairs (width <= 0, or < 1 for
    LINEAR) are dropped. An unknown VOILUTFunction falls back to LINEAR (PS3.3 default).
    """
    centers = _floats(header.get("WindowCenter"))
    widths = _floats(header.get("WindowWidth"))
    explanations = _strings(header.get("WindowCenterWidthExplanation"))
    function = str(header.get("VOILUTFunction", "") or "LINEAR").strip().upper()
    if function not in VOI_FUNCTIONS:
        function = "LINEAR"
    windows = []
    for i, (center, width) in enumerate(zip(centers, widths)):
        if not (np.isfinite(center) and np.isfinite(width)) or width <= 0.0:
            continue
        if function == "LINEAR" and width < 1.0:
            continue
        name = explanations[i] if i < len(explanations) else f"window {i + 1}"
        windows.append(Window(center, width, function, name))
    for i, item in enumerate(header.get("VOILUTSequence") or []):
        descriptor = item.get("LUTDescriptor")
        try:
            entries = int(descriptor[0]) or 65536
            first = int(descriptor[1])
        except (TypeError, ValueError, IndexError):
            continue
        if first >= 32768 and "PixelRepresentation" in header and int(header.PixelRepresentation or 0) == 1:
            first -= 65536  # first mapped value stored as US for a signed image
        name = str(item.get("LUTExplanation", "") or f"VOI LUT {i + 1}")
        windows.append(Window(first + entries / 2.0, float(entries), LUT_FUNCTION, name, i))
    return windows


def auto_window(values: np.ndarray, percentiles: tuple[float, float] = AUTO_PERCENTILES) -> Window:
    """A LINEAR_EXACT window spanning the given percentiles of ``values`` (float32 HxW).

    LINEAR_EXACT (PS3.3 C.11.2.1.3.2) maps exactly [lo, hi] onto [0, 1], also for data whose
    whole range is below 1 (where LINEAR's width >= 1 would not fit). Computed on a strided
    sample of at most ~65k pixels (a few ms on 3000x3000 images); the 0.5 % tails still
    hold ~300 samples each.
    """
    flat = values.reshape(-1)
    step = max(1, flat.size // 65_536)
    sample = flat[::step]
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return Window(0.5, 1.0, "LINEAR_EXACT", "automatic")
    lo, hi = (float(v) for v in np.percentile(sample, percentiles))
    if not hi > lo:
        lo, hi = float(sample.min()), float(sample.max())
        if not hi > lo:
            lo, hi = lo - 0.5, lo + 0.5
    return Window((lo + hi) / 2.0, hi - lo, "LINEAR_EXACT", "automatic")


def apply_window(values: np.ndarray, window: Window, *, out: np.ndarray | None = None) -> np.ndarray:
    """Modality values (float32 HxW) -> [0, 1] float32 by PS3.3 C.11.2.1.2 (LINEAR,
    LINEAR_EXACT) or C.11.2.1.3.1 (SIGMOID). Writes into ``out`` if given (may be ``values``)."""
    c, w = float(window.center), float(window.width)
    function = window.function.upper()
    if out is None:
        out = np.empty(values.shape, dtype=np.float32)
    if function == "SIGMOID":
        w = max(w, 1e-6)
        np.multiply(values, np.float32(-4.0 / w), out=out)
        np.add(out, np.float32(4.0 * c / w), out=out)
        with np.errstate(over="ignore"):  # exp -> inf far below the centre: 1/(1+inf) = 0, as wanted
            np.exp(out, out=out)
        np.add(out, np.float32(1.0), out=out)
        np.reciprocal(out, out=out)
        return out
    if function == "LINEAR_EXACT":
        w = max(w, 1e-6)
        scale, offset = 1.0 / w, 0.5 - c / w
    else:  # LINEAR: y = ((x - (c - 0.5)) / (w - 1) + 0.5), width >= 1
        w = max(w, 1.0)
        if w == 1.0:  # a threshold at c - 0.5
            np.greater(values, np.float32(c - 0.5), out=out)
            return out
        scale, offset = 1.0 / (w - 1.0), 0.5 - (c - 0.5) / (w - 1.0)
    np.multiply(values, np.float32(scale), out=out)
    np.add(out, np.float32(offset), out=out)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def apply_voi_lut_item(values: np.ndarray, voi: Dataset, index: int) -> np.ndarray:
    """Modality values (float32 HxW) -> [0, 1] float32 through item ``index`` of the VOI LUT
    Sequence (0028,3010) held by ``voi``, using ``pydicom.pixels.apply_voi``."""
    item = voi.VOILUTSequence[index]
    bits = int(item.LUTDescriptor[2])
    integral = np.rint(values).astype(np.int32)
    mapped = apply_voi(integral, voi, index)
    out = mapped.astype(np.float32)
    np.multiply(out, np.float32(1.0 / (2**bits - 1)), out=out)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def invert_unit(unit: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """[0, 1] float32 -> ``1 - unit`` (MONOCHROME1 / INVERSE presentation LUT shape)."""
    return np.subtract(np.float32(1.0), unit, out=out, dtype=np.float32)


def unit_to_uint8(unit: np.ndarray) -> np.ndarray:
    """[0, 1] float32 HxW -> uint8 HxW (rounded), the screen's 8 bits."""
    scaled = np.multiply(unit, np.float32(255.0), dtype=np.float32)
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8)


def should_invert(photometric: str, presentation_lut_shape: str | None) -> bool:
    """True when white must mean low values: MONOCHROME1 (0028,0004) or shape INVERSE (2050,0020).

    For MONOCHROME1 the IODs require shape INVERSE, which describes the same inversion:
    the two are not applied twice.
    """
    return photometric.strip().upper() == "MONOCHROME1" or (presentation_lut_shape or "").strip().upper() == "INVERSE"


# ----------------------------------------------------------------------------- colour


def colour_to_grey(rgb: np.ndarray) -> np.ndarray:
    """RGB HxWx3 (any integer dtype) -> float32 HxW luma (BT.601 weights), same value scale."""
    r, g, b = LUMA_WEIGHTS
    grey = rgb[..., 0].astype(np.float32) * np.float32(r)
    grey += rgb[..., 1].astype(np.float32) * np.float32(g)
    grey += rgb[..., 2].astype(np.float32) * np.float32(b)
    return grey


# ----------------------------------------------------------------------------- whole image


def unit_image(image: DisplayImage, window: Window | None = None, *, invert: bool | None = None) -> np.ndarray:
    """The image through VOI and inversion: float32 HxW in [0, 1], 1.0 = white on screen."""
    window = window or image.default_window
    if window.function == LUT_FUNCTION and window.lut_index is not None and image.voi_lut is not None:
        unit = apply_voi_lut_item(image.values, image.voi_lut, window.lut_index)
    else:
        unit = apply_window(image.values, window)
    if image.invert if invert is None else invert:
        invert_unit(unit, out=unit)
    return unit


def render(image: DisplayImage, window: Window | None = None, *, invert: bool | None = None) -> np.ndarray:
    """uint8 HxW for the screen: VOI (``window`` or the default), inversion, 8 bits."""
    return unit_to_uint8(unit_image(image, window, invert=invert))


def display_image_from_frame(frame: DecodedFrame, *, source: Path | None = None) -> DisplayImage:
    """Everything window-independent about a decoded frame: modality values, presets, notes."""
    header = frame.header
    notes: list[str] = []
    if frame.number_of_frames > 1:
        notes.append(f"multi-frame: first of {frame.number_of_frames} frames shown")
    photometric = frame.photometric
    pixels = frame.pixels
    presets: list[Window] = []
    voi: Dataset | None = None
    try:
        if photometric == "PALETTE COLOR":
            rgb = apply_color_lut(pixels, header)
            values = colour_to_grey(rgb)
            notes.append("palette colour image converted to grey")
            top = float(np.iinfo(rgb.dtype).max) if rgb.dtype.kind in "ui" else float(rgb.max() or 1.0)
            presets = []
            default = Window(top / 2.0 + 0.5, top + 1.0, "LINEAR", "full range")
        elif pixels.ndim == 3:
            values = colour_to_grey(pixels)
            notes.append(f"{photometric or 'colour'} image converted to grey")
            bits = int(header.get("BitsStored", 8) or 8)
            top = float(2 ** max(1, min(bits, 32)) - 1)
            default = Window(top / 2.0 + 0.5, top + 1.0, "LINEAR", "full range")
        else:
            values = modality_lut(pixels, header)
            if not np.isfinite(values.sum(dtype=np.float64)):
                np.nan_to_num(values, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
                notes.append("non-finite values after the modality LUT set to 0")
            presets = windows_from_header(header)
            if any(w.function == LUT_FUNCTION for w in presets):
                voi = _voi_lut_holder(header)
                presets = _usable_presets(presets, voi, notes)
            default = presets[0] if presets else auto_window(values)
            if not presets:
                notes.append("no window in the file: automatic window (0.5-99.5 percentiles)")
        invert = (
            pixels.ndim == 2
            and photometric != "PALETTE COLOR"
            and should_invert(photometric, str(header.get("PresentationLUTShape", "") or ""))
        )
        stored_bits = int(header.get("BitsStored", 0) or 0)
    except DECODER_ERRORS as exc:
        raise PixelDecodeError(
            f"cannot apply the modality/colour transform: {type(exc).__name__}: {exc}", path=source
        ) from exc
    if values.ndim != 2:
        raise PixelDecodeError(f"unexpected image shape {values.shape}", path=source)
    return DisplayImage(
        values=values,
        photometric=photometric,
        invert=invert,
        windows=presets,
        default_window=default,
        notes=notes,
        voi_lut=voi,
        source=source,
        number_of_frames=frame.number_of_frames,
        stored_bits=stored_bits,
    )


def _voi_lut_holder(header: Dataset) -> Dataset:
    """A small dataset with what ``pydicom.pixels.apply_voi`` needs for the VOI LUT Sequence."""
    voi = Dataset()
    voi.VOILUTSequence = header.VOILUTSequence
    voi.PixelRepresentation = header.get("PixelRepresentation", 0)
    if hasattr(header, "file_meta"):
        voi.file_meta = header.file_meta
    voi.set_original_encoding(*header.original_encoding)
    return voi


def _usable_presets(presets: list[Window], voi: Dataset, notes: list[str]) -> list[Window]:
    """Drop VOI LUT items that cannot be applied (tried on a 2x2 probe), with a note each."""
    probe = np.zeros((2, 2), dtype=np.float32)
    usable = []
    for window in presets:
        if window.function == LUT_FUNCTION and window.lut_index is not None:
            try:
                apply_voi_lut_item(probe, voi, window.lut_index)
            except DECODER_ERRORS as exc:
                notes.append(f"{window.name} unreadable ({type(exc).__name__}): ignored")
                continue
        usable.append(window)
    return usable


def load_display_image(path: str | os.PathLike[str]) -> DisplayImage:
    """Decode ``path`` (first frame) and prepare it for display, in a decoder worker process
    (:mod:`pneumoview.dicom.sandbox`); raises DicomReadError / PixelDecodeError / DecoderError."""
    from pneumoview.dicom import sandbox

    path = Path(path)
    check_regular_file(path)
    meta, arrays = sandbox.run(display_task, path)
    return display_image_from_parts(meta, arrays, source=path)


def load_display_image_in_process(path: str | os.PathLike[str]) -> DisplayImage:
    """:func:`load_display_image` in the calling process (the decoder worker's side)."""
    path = Path(path)
    return display_image_from_frame(decode_first_frame(path), source=path)


def display_task(path: Path) -> tuple[dict[str, object], dict[str, np.ndarray]]:
    """Sandbox task: :func:`load_display_image_in_process` as JSON + arrays (no pickling).

    The VOI LUT Sequence (0028,3010), where used, travels as the bytes of a small Explicit VR
    Little Endian data set (:func:`_voi_lut_holder`'s content)."""
    image = load_display_image_in_process(path)
    voi = None
    if image.voi_lut is not None:
        buffer = DicomBytesIO()
        buffer.is_little_endian, buffer.is_implicit_VR = True, False
        write_dataset(buffer, correct_ambiguous_vr(copy.deepcopy(image.voi_lut), True))
        voi = base64.b64encode(buffer.getvalue()).decode("ascii")
    meta = {
        "photometric": image.photometric,
        "invert": image.invert,
        "windows": [dataclasses.asdict(w) for w in image.windows],
        "default_window": dataclasses.asdict(image.default_window),
        "notes": list(image.notes),
        "voi_lut": voi,
        "number_of_frames": image.number_of_frames,
        "stored_bits": image.stored_bits,
    }
    return meta, {"values": image.values}


#: Errors of a malformed worker reply (the worker is not trusted).
_REPLY_ERRORS: tuple[type[BaseException], ...] = (KeyError, TypeError, ValueError, *DECODER_ERRORS)


def _window(data: object) -> Window:
    if not isinstance(data, dict):
        raise TypeError("window expected")
    index = data.get("lut_index")
    return Window(
        center=float(data["center"]),
        width=float(data["width"]),
        function=str(data["function"]),
        name=str(data["name"]),
        lut_index=int(index) if index is not None else None,
    )


def display_image_from_parts(meta: dict[str, object], arrays: dict[str, np.ndarray], *, source: Path) -> DisplayImage:
    """Rebuild the :class:`DisplayImage` a worker sent (see :func:`display_task`)."""
    try:
        values = arrays["values"]
        if values.dtype != np.float32 or values.ndim != 2:
            raise ValueError(f"unexpected values {values.dtype} {values.shape}")
        voi = None
        if meta.get("voi_lut"):
            voi = read_dataset(cast(BinaryIO, DicomBytesIO(base64.b64decode(str(meta["voi_lut"])))), False, True)
            voi.set_original_encoding(False, True)
        windows = meta["windows"]
        notes = meta["notes"]
        if not isinstance(windows, list) or not isinstance(notes, list):
            raise TypeError("lists expected")
        return DisplayImage(
            values=values,
            photometric=str(meta["photometric"]),
            invert=bool(meta["invert"]),
            windows=[_window(w) for w in windows],
            default_window=_window(meta["default_window"]),
            notes=[str(n) for n in notes],
            voi_lut=voi,
            source=source,
            number_of_frames=int(meta["number_of_frames"]),  # type: ignore[call-overload]
            stored_bits=int(meta["stored_bits"]),  # type: ignore[call-overload]
        )
    except _REPLY_ERRORS as exc:
        raise PixelDecodeError(f"unusable reply from the decoder: {type(exc).__name__}", path=source) from exc


# ----------------------------------------------------------------------------- helpers


def _float(value: object, default: float) -> float:
    if value is None or value == "":
        return default
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else default  # type: ignore[index, arg-type]
    try:
        result = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    return result if np.isfinite(result) else default


def _is_multi(value: object) -> bool:
    """A multi-valued element (pydicom's MultiValue, or a list / tuple)."""
    return isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue"


def _floats(value: object) -> list[float]:
    if value is None or value == "":
        return []
    items = list(cast(Iterable[object], value)) if _is_multi(value) else [value]
    out = []
    for item in items:
        try:
            out.append(float(item))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            out.append(float("nan"))
    return out


def _strings(value: object) -> list[str]:
    if value is None:
        return []
    items = list(cast(Iterable[object], value)) if _is_multi(value) else [value]
    return [str(v).strip() for v in items]
