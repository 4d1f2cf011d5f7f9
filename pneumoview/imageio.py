"""One entry point for radiographs on disk: DICOM *and* PNG/JPEG/TIFF (training data, figures).

:func:`load_grey` returns float32 ``[H, W]`` in ``[0, 1]`` with 1.0 = white (bone bright), in
display orientation, whatever the source:

* DICOM: first frame -> modality LUT -> the file's first VOI window (else an automatic one)
  -> MONOCHROME1 / INVERSE inversion -> [0, 1] (the pipeline of :mod:`pneumoview.dicom.display`).
* PNG/JPEG/TIFF/BMP: EXIF orientation applied -> grey -> divided by the format's maximum
  (255 for 8 bits, 65535 for 16 bits).

The decoding runs in a decoder worker process (:mod:`pneumoview.dicom.sandbox`): a file that
crashes, hangs or exhausts a codec costs only a per-file
:class:`~pneumoview.errors.DecoderError`. Only regular files are opened (FIFOs, devices and
sockets raise :class:`~pneumoview.errors.NotRegularFileError`, code ``not-a-regular-file``).
Which files are DICOM follows the one rule of :mod:`pneumoview.dicom.files`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pneumoview.dicom import sandbox
from pneumoview.dicom.display import (
    LUT_FUNCTION,
    DisplayImage,
    Window,
    apply_voi_lut_item,
    apply_window,
    invert_unit,
    load_display_image,
    load_display_image_in_process,
)
from pneumoview.dicom.files import DICOM_MAGIC, DICOM_SUFFIXES, has_dicom_name, has_dicom_preamble
from pneumoview.dicom.pictures import NO_DICOM_HEADER, is_picture_file
from pneumoview.dicom.readonly import check_regular_file, open_readonly
from pneumoview.errors import DicomReadError, PixelDecodeError, UnsupportedImageError

__all__ = [
    "DICOM_MAGIC",
    "DICOM_SUFFIXES",
    "GreyImage",
    "grey_from_display",
    "is_dicom_file",
    "load_grey",
    "load_grey_in_process",
    "load_picture_display",
    "load_viewable",
]


@dataclass
class GreyImage:
    """A radiograph as the model pipeline sees it before the lung crop."""

    pixels: np.ndarray  # float32 HxW in [0, 1], 1.0 = white (bone bright), display orientation
    source: Path
    notes: list[str] = field(default_factory=list)
    is_dicom: bool = False


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` is a regular file with the DICOM Part 10 preamble ("DICM" at byte 128)."""
    return has_dicom_preamble(path)


def check_path(path: Path) -> None:
    """Raise DicomReadError unless ``path`` exists and is a regular file (NotRegularFileError for
    FIFOs, devices, sockets and folders); never opens it."""
    if not path.exists():
        raise DicomReadError("no such file", path=path)
    check_regular_file(path)


def load_grey(path: str | os.PathLike[str]) -> GreyImage:
    """Load ``path`` (DICOM or a common image format) as :class:`GreyImage`, decoded in the sandbox.

    Raises :class:`DicomReadError` / :class:`PixelDecodeError` for unreadable DICOM,
    :class:`~pneumoview.errors.DecoderError` when the decoder crashed, hung or ran out of memory,
    and :class:`UnsupportedImageError` (code ``"unsupported-file"``) for anything that is neither.
    """
    path = Path(path)
    check_path(path)
    meta, arrays = sandbox.run(grey_task, path)
    return GreyImage(
        pixels=arrays["pixels"], source=path, notes=[str(n) for n in meta["notes"]], is_dicom=bool(meta["is_dicom"])
    )


def grey_task(path: Path) -> tuple[dict[str, object], dict[str, np.ndarray]]:
    """Sandbox task (runs in a decoder worker): :func:`load_grey_in_process` as JSON + arrays."""
    grey = load_grey_in_process(path)
    return {"notes": list(grey.notes), "is_dicom": grey.is_dicom}, {"pixels": grey.pixels}


def load_grey_in_process(path: str | os.PathLike[str]) -> GreyImage:
    """:func:`load_grey` without the sandbox: decodes in the calling process (the worker's side)."""
    path = Path(path)
    check_path(path)
    if is_dicom_file(path):
        return grey_from_display(load_display_image_in_process(path))
    try:
        return _load_picture(path)
    except UnidentifiedImageError as picture_error:
        if has_dicom_name(path):
            try:
                return grey_from_display(load_display_image_in_process(path))  # DICOM without preamble
            except DicomReadError:
                pass  # neither: reported below with both formats named
        raise UnsupportedImageError(
            "unsupported-file", "neither DICOM nor a readable PNG/JPEG/TIFF image", path=path
        ) from picture_error


#: Display units of a picture shown in the viewer: grey levels 0..PICTURE_SCALE (16-bit pictures scaled down).
PICTURE_SCALE = 255.0


def load_viewable(path: str | os.PathLike[str]) -> DisplayImage:
    """What the viewer shows for ``path``: a DICOM image (:func:`pneumoview.dicom.display.load_display_image`)
    or, for a PNG/JPEG/TIFF picture (:func:`pneumoview.dicom.pictures.is_picture_file`),
    :func:`load_picture_display`. Both decode in a decoder worker process."""
    path = Path(path)
    if is_picture_file(path):
        return load_picture_display(path)
    return load_display_image(path)


def load_picture_display(path: str | os.PathLike[str]) -> DisplayImage:
    """A PNG/JPEG/TIFF picture as a :class:`DisplayImage`, decoded in a decoder worker process.

    Values are the picture's grey levels scaled to 0..:data:`PICTURE_SCALE` (white = bright, as stored,
    EXIF orientation applied); no VOI information, so the default window is the full range and the
    photometric interpretation is empty. ``notes`` starts with :data:`~pneumoview.dicom.pictures.NO_DICOM_HEADER`
    (the viewer's marker). Raises PixelDecodeError / UnsupportedImageError / DecoderError.
    """
    path = Path(path)
    check_path(path)
    meta, arrays = sandbox.run(picture_display_task, path)
    values = arrays["values"]
    if not np.isfinite(values).all():
        raise PixelDecodeError("picture has non-finite values", path=path)
    return DisplayImage(
        values=values,
        photometric="",
        invert=False,
        windows=[],
        default_window=Window(center=PICTURE_SCALE / 2, width=PICTURE_SCALE, name="Picture (full range)"),
        notes=[NO_DICOM_HEADER, *(str(n) for n in meta["notes"])],
        source=path,
    )


def picture_display_task(path: Path) -> tuple[dict[str, object], dict[str, np.ndarray]]:
    """Sandbox task: decode a picture (:func:`_load_picture`) -> 0..PICTURE_SCALE float32 (JSON + arrays)."""
    check_path(path)
    try:
        grey = _load_picture(path)
    except UnidentifiedImageError as exc:
        raise UnsupportedImageError("unsupported-file", "not a readable PNG/JPEG/TIFF image", path=path) from exc
    values = grey.pixels
    np.multiply(values, np.float32(PICTURE_SCALE), out=values)
    return {"notes": list(grey.notes)}, {"values": values}


def grey_from_display(image: DisplayImage) -> GreyImage:
    """DICOM display image -> [0, 1] through its default window and inversion (float32, in place).

    Consumes ``image.values`` (windowed in place to avoid a second full-size array).
    """
    window = image.default_window
    if window.function == LUT_FUNCTION and window.lut_index is not None and image.voi_lut is not None:
        unit = apply_voi_lut_item(image.values, image.voi_lut, window.lut_index)
    else:
        unit = apply_window(image.values, window, out=image.values)
    if image.invert:
        invert_unit(unit, out=unit)
    notes = list(image.notes)
    if image.invert:
        notes.append(
            "MONOCHROME1 (0028,0004): grey levels mapped so that bone is white, as the file asks"
            if image.photometric == "MONOCHROME1"
            else "Presentation LUT Shape INVERSE (2050,0020) applied, as the file asks"
        )
    source = image.source if image.source is not None else Path()
    return GreyImage(pixels=unit, source=source, notes=notes, is_dicom=True)


def _load_picture(path: Path) -> GreyImage:
    notes: list[str] = []
    try:
        with open_readonly(path) as handle, Image.open(handle) as opened:
            picture = ImageOps.exif_transpose(opened)
            if picture is None:  # pragma: no cover - only for in_place=True
                picture = opened
            if getattr(opened, "n_frames", 1) > 1:
                notes.append(f"multi-page image: first of {opened.n_frames} pages used")
            pixels = _picture_to_unit(picture, notes)
    except UnidentifiedImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise PixelDecodeError(f"image too large: {exc}", path=path) from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise PixelDecodeError(f"cannot decode image: {type(exc).__name__}: {exc}", path=path) from exc
    return GreyImage(pixels=pixels, source=path, notes=notes, is_dicom=False)


def _picture_to_unit(picture: Image.Image, notes: list[str]) -> np.ndarray:
    """Pillow image -> float32 HxW in [0, 1]."""
    mode = picture.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        array = np.asarray(picture, dtype=np.uint16)
        top = 65535.0
    elif mode == "I":
        array = np.asarray(picture, dtype=np.int32)
        top = 65535.0 if int(array.max(initial=0)) <= 65535 else float(array.max())
        array = np.clip(array, 0, None)
    elif mode == "F":
        array = np.asarray(picture, dtype=np.float32)
        low, high = float(np.nanmin(array)), float(np.nanmax(array))
        notes.append("floating-point image scaled from its own min/max")
        scaled = (array - np.float32(low)) / np.float32(max(high - low, 1e-12))
        return np.clip(np.nan_to_num(scaled), 0.0, 1.0).astype(np.float32, copy=False)
    else:
        if mode not in ("L", "1"):
            notes.append(f"{mode} image converted to grey")
        if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in picture.info):
            picture = picture.convert("RGBA")
            background = Image.new("RGBA", picture.size, (0, 0, 0, 255))
            picture = Image.alpha_composite(background, picture)
        array = np.asarray(picture.convert("L"), dtype=np.uint8)
        top = 255.0
    out = array.astype(np.float32)
    np.multiply(out, np.float32(1.0 / top), out=out)
    return out
