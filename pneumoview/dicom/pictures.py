"""Radiographs without a DICOM header (PNG, JPEG, TIFF): which files they are and their scan record.

A folder scan (:func:`pneumoview.dicom.scan.read_picture_record`) lists such a picture as an
:class:`~pneumoview.dicom.scan.ImageRecord` with ``picture_format`` set ("PNG", "JPEG", "TIFF"),
no UIDs and no patient, grouped in the browser under the worker / study :data:`NO_DICOM_HEADER`
(its patient name and study description). Its identity is the SHA-256 of its bytes with an empty
SOP Instance UID (:class:`pneumoview.results.ImageIdentity`).

Reading the record parses the picture's *header* only, in this process, like a DICOM header:
Pillow's ``Image.open`` (image size and mode; Pillow's decompression-bomb guard stays on, and a
picture above ``Image.MAX_IMAGE_PIXELS`` is refused, not just warned about), then a cheap check
that the file is complete: PNG chunk CRCs through ``Image.verify()`` (no pixel inflation), the
JPEG end-of-image marker (FFD9), and TIFF strips / tiles lying inside the file. A picture that
fails any of these is a per-file :class:`~pneumoview.errors.DicomReadError` (a *Problem*, never
a crash). Pixel data are decoded only in a decoder worker process
(:func:`pneumoview.imageio.load_picture_display`, :func:`pneumoview.imageio.load_grey`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from pneumoview.dicom.files import has_dicom_preamble
from pneumoview.dicom.readonly import BoundedReader, open_readonly
from pneumoview.errors import DicomReadError

#: Name suffixes (lower case) of pictures listed by the scan, and the format each must be.
PICTURE_SUFFIXES: dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}
#: The browser's worker name and study description for pictures, and the viewer's marker text.
NO_DICOM_HEADER = "No DICOM header"
#: Pillow modes a grey radiograph may have (colour pictures are shown converted to grey).
_BITS = {"1": 1, "L": 8, "P": 8, "RGB": 8, "RGBA": 8, "LA": 8, "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 16, "F": 32}
_JPEG_END = b"\xff\xd9"


def has_picture_name(path: str | os.PathLike[str]) -> bool:
    """True if the name's suffix is one of :data:`PICTURE_SUFFIXES` (case-insensitive)."""
    return Path(path).suffix.lower() in PICTURE_SUFFIXES


def is_picture_file(path: str | os.PathLike[str]) -> bool:
    """A picture name and no DICOM preamble (a DICOM file named ``x.png`` stays DICOM)."""
    return has_picture_name(path) and not has_dicom_preamble(path)


def picture_header(path: Path) -> tuple[str, int, int, int]:
    """``(format, width, height, bits)`` of the picture at ``path``, checked complete (see the module).

    Raises :class:`DicomReadError` (reason says why) for anything that is not a complete PNG / JPEG /
    TIFF, :class:`NotRegularFileError` for FIFOs, devices and sockets.
    """
    expected = PICTURE_SUFFIXES.get(path.suffix.lower(), "")
    try:
        with open_readonly(path) as handle, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(handle) as picture:
                fmt, (width, height), mode = str(picture.format or ""), picture.size, picture.mode
                if fmt not in ("PNG", "JPEG", "TIFF", "MPO"):
                    raise DicomReadError(
                        f"not a PNG/JPEG/TIFF picture (Pillow reads it as {fmt or 'unknown'})", path=path
                    )
                _check_complete(picture, handle, fmt, path.stat().st_size)
    except DicomReadError:  # NotRegularFileError included
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DicomReadError(f"picture too large: {exc}", path=path) from exc
    except UnidentifiedImageError as exc:
        raise DicomReadError(f"not a readable {expected or 'PNG/JPEG/TIFF'} picture", path=path) from exc
    except (OSError, ValueError, SyntaxError, EOFError, KeyError, IndexError, TypeError) as exc:
        raise DicomReadError(f"corrupt or truncated picture: {type(exc).__name__}: {exc}", path=path) from exc
    if width <= 0 or height <= 0:
        raise DicomReadError("picture without pixels (0 rows or columns)", path=path)
    return ("JPEG" if fmt == "MPO" else fmt), int(width), int(height), _BITS.get(mode, 8)


def _check_complete(picture: Image.Image, handle: BoundedReader, fmt: str, size: int) -> None:
    """Raise ValueError / SyntaxError when the file (``size`` bytes) ends before its pixel data do."""
    if fmt == "PNG":
        picture.verify()  # every chunk read and its CRC checked; the image data are not inflated
    elif fmt in ("JPEG", "MPO"):
        handle.seek(max(0, size - 64))
        if _JPEG_END not in handle.read(64):
            raise ValueError("no JPEG end-of-image marker (FFD9): truncated")
    elif fmt == "TIFF":
        tags = picture.tag_v2  # type: ignore[attr-defined]
        offsets = tags.get(273) or tags.get(324) or ()  # StripOffsets / TileOffsets
        counts = tags.get(279) or tags.get(325) or ()  # StripByteCounts / TileByteCounts
        if not offsets or len(offsets) != len(counts):
            raise ValueError("TIFF without strip or tile offsets")
        if max(int(o) + int(c) for o, c in zip(offsets, counts)) > size:
            raise ValueError("TIFF pixel data extend past the end of the file: truncated")
