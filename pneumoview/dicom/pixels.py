"""Decode DICOM pixel data to stored values (every transfer syntax pydicom's plugins handle).

:func:`decode_first_frame` reads a file read-only and returns the first frame's stored
values (``pydicom.pixels.pixel_array`` with ``index=0``: multi-frame files decode one
frame only) plus the header :class:`~pydicom.dataset.Dataset` the display pipeline needs.
Codecs are pydicom's plugins: native little/big endian and deflated, RLE (pylibjpeg-rle,
else pydicom's numpy decoder), JPEG baseline/extended 8-bit (Pillow), JPEG 2000
(pylibjpeg-openjpeg, else Pillow), JPEG lossless and JPEG-LS (GDCM, after a header check:
see :func:`check_jpeg_stream`). 12-bit JPEG extended needs pylibjpeg-libjpeg (GPL, not
installed) and is reported as unsupported. Any failure is a :class:`PixelDecodeError`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.pixels import get_decoder, pixel_array

from pneumoview.dicom.readonly import HEADER_INFLATE_CAP, is_deflated, open_readonly, read_deflated
from pneumoview.dicom.scan import PARSER_ERRORS, header_read_error, read_header
from pneumoview.errors import PixelDecodeError, PneumoViewError

#: Largest decoded frame accepted (256 MiB; a 4300x4300 16-bit radiograph is 37 MiB):
#: a corrupt Rows/Columns must not exhaust memory.
MAX_FRAME_BYTES = 1 << 28

#: Exceptions pydicom's parser and codecs are known to raise on corrupt input.
DECODER_ERRORS: tuple[type[BaseException], ...] = (*PARSER_ERRORS, RuntimeError, ZeroDivisionError)


@dataclass
class DecodedFrame:
    """First frame of an image, as stored: ``pixels`` is HxW (grey) or HxWx3 (colour, RGB)."""

    pixels: np.ndarray  # uint8/uint16/int16/... as stored; RGB for YBR sources
    header: Dataset  # the whole header, without Pixel Data
    number_of_frames: int
    photometric: str  # PhotometricInterpretation of ``pixels`` ("RGB" after YBR conversion)
    transfer_syntax: str


def _check_size(header: Dataset, path: Path) -> None:
    try:
        rows = int(header.get("Rows", 0) or 0)
        cols = int(header.get("Columns", 0) or 0)
        spp = int(header.get("SamplesPerPixel", 1) or 1)
        bits = int(header.get("BitsAllocated", 16) or 16)
    except DECODER_ERRORS as exc:
        raise PixelDecodeError(f"unreadable image size attributes: {exc}", path=path) from exc
    if rows <= 0 or cols <= 0:
        raise PixelDecodeError("no image: Rows/Columns missing or zero", path=path, tag="(0028,0010)")
    if rows * cols * spp * max(1, bits // 8) > MAX_FRAME_BYTES:
        raise PixelDecodeError(
            f"image too large to decode ({rows}x{cols}x{spp}, {bits} bits): corrupt header?", path=path
        )


def decode_first_frame(path: str | os.PathLike[str]) -> DecodedFrame:
    """Decode the first frame of ``path`` (opened read-only) to stored values.

    Raises :class:`DicomReadError` if the file is not DICOM and :class:`PixelDecodeError`
    if its pixel data cannot be decoded (missing, truncated, unsupported codec, ...).
    """
    path = Path(path)
    try:
        header = read_header(path)
    except DECODER_ERRORS as exc:
        raise header_read_error(exc, path) from exc
    try:
        _check_size(header, path)
        return _decode(path, header)
    except PneumoViewError:
        raise
    except DECODER_ERRORS as exc:  # a header value that only fails when it is read (lazy parsing)
        raise PixelDecodeError(f"corrupt image attribute: {type(exc).__name__}: {exc}", path=path) from exc


def _decode(path: Path, header: Dataset) -> DecodedFrame:
    meta = getattr(header, "file_meta", None)
    transfer_syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    photometric = str(header.get("PhotometricInterpretation", "") or "").strip().upper()
    try:
        frames = int(header.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        frames = 1
    pixels = _first_frame(path, header, transfer_syntax)
    if pixels.ndim == 3 and pixels.shape[-1] == 3 and photometric.startswith("YBR"):
        photometric = "RGB"
    if pixels.ndim not in (2, 3) or pixels.size == 0:
        raise PixelDecodeError(f"unexpected decoded shape {pixels.shape}", path=path)
    return DecodedFrame(
        pixels=pixels,
        header=header,
        number_of_frames=max(1, frames),
        photometric=photometric,
        transfer_syntax=transfer_syntax,
    )


#: Decoding plugins in order of preference. GDCM comes last and is used only for transfer
#: syntaxes no other installed plugin decodes (JPEG lossless, JPEG-LS): on a header that
#: disagrees with the codestream it aborts the whole process (found by the fuzz test in
#: tests/dicom), so it is called only after :func:`check_jpeg_stream`.
PLUGIN_PREFERENCE = ("pylibjpeg", "pillow", "pydicom", "pyjpegls", "gdcm")


def decoding_plugins(transfer_syntax: str) -> list[str]:
    """Plugins to try for ``transfer_syntax``: ``[""]`` for native encodings, ``[]`` if none is installed."""
    uid = pydicom.uid.UID(transfer_syntax)
    if not uid.is_transfer_syntax:
        return []
    if not uid.is_compressed:
        return [""]
    try:
        available = set(get_decoder(uid).available_plugins)
    except NotImplementedError:
        return []
    safe = [name for name in PLUGIN_PREFERENCE if name in available and name != "gdcm"]
    if safe:
        return safe
    return ["gdcm"] if "gdcm" in available else []


def _is_codec_failure(exc: BaseException) -> bool:
    """Errors a codec may raise on bad input: the usual types, plus Rust ``PanicException``
    (pylibjpeg-rle), which derives from BaseException."""
    return isinstance(exc, DECODER_ERRORS) or type(exc).__name__ == "PanicException"


def inflate_cap(header: Dataset) -> int:
    """Most bytes a deflated data set may inflate to: its pixels as the header describes them
    (Rows x Columns x Samples x Bits Allocated x frames) plus room for the header (PS3.5 A.5).
    :func:`~pneumoview.dicom.readonly.read_deflated` also applies an absolute cap."""
    try:
        rows = int(header.get("Rows", 0) or 0)
        cols = int(header.get("Columns", 0) or 0)
        spp = int(header.get("SamplesPerPixel", 1) or 1)
        bits = int(header.get("BitsAllocated", 16) or 16)
        frames = int(header.get("NumberOfFrames", 1) or 1)
    except DECODER_ERRORS:
        return HEADER_INFLATE_CAP
    pixel_bytes = max(0, rows) * max(0, cols) * max(1, spp) * max(1, (bits + 7) // 8) * max(1, frames)
    return HEADER_INFLATE_CAP + pixel_bytes


def _full_dataset(path: Path, header: Dataset | None = None) -> Dataset:
    """The whole file (pixel data included); File Meta completed in memory when absent.
    A deflated file is inflated at most to :func:`inflate_cap` of its ``header``."""
    with open_readonly(path) as handle:
        if is_deflated(handle):
            dataset: Dataset = read_deflated(
                handle, stop_before_pixels=False, cap=inflate_cap(header if header is not None else Dataset())
            )
        else:
            dataset = pydicom.dcmread(handle, force=True)
    if "PixelData" not in dataset:
        raise ValueError("the file has no Pixel Data (7FE0,0010)")
    if not dataset.file_meta.get("TransferSyntaxUID"):
        # No File Meta: the encoding the reader detected is the transfer syntax (in memory only).
        implicit, little = dataset.original_encoding
        dataset.file_meta.TransferSyntaxUID = (
            pydicom.uid.ImplicitVRLittleEndian
            if implicit
            else pydicom.uid.ExplicitVRLittleEndian
            if little
            else pydicom.uid.ExplicitVRBigEndian
        )
    return dataset


def _first_frame(path: Path, header: Dataset, transfer_syntax: str) -> np.ndarray:
    """First frame as stored. ``pixel_array(path, index=0)`` reads one frame only; files
    without File Meta (or that the streaming reader rejects, e.g. deflated) are read whole.
    Each allowed plugin is tried in turn; if all fail, one PixelDecodeError lists why."""
    source: Path | Dataset = path
    try:
        if not transfer_syntax or transfer_syntax == pydicom.uid.DeflatedExplicitVRLittleEndian:
            source = _full_dataset(path, header)  # deflated: never pydicom's unbounded inflate
            transfer_syntax = str(source.file_meta.TransferSyntaxUID)
    except BaseException as exc:
        if not _is_codec_failure(exc):
            raise
        raise PixelDecodeError(_decode_failure_reason(transfer_syntax, header, [("", exc)]), path=path) from exc
    plugins = decoding_plugins(transfer_syntax)
    if not plugins:
        uid = pydicom.uid.UID(transfer_syntax)
        what = (
            f"no decoder for {uid.name} is installed" if uid.is_transfer_syntax else f"unknown transfer syntax {uid!r}"
        )
        raise PixelDecodeError(f"unsupported: {what}", path=path, tag="(0002,0010)")
    failures: list[tuple[str, BaseException]] = []
    for plugin in plugins:
        try:
            if plugin == "gdcm":
                if isinstance(source, Path):
                    source = _full_dataset(path, header)
                check_jpeg_stream(source)
            # as_rgb (the default) turns YBR_* colour into RGB.
            if isinstance(source, Dataset):
                return pixel_array(source, index=0, decoding_plugin=plugin)
            with open_readonly(source) as handle:  # streams the header and the first frame only
                return pixel_array(handle, index=0, decoding_plugin=plugin)
        except BaseException as exc:
            if not _is_codec_failure(exc):
                raise
            failures.append((plugin, exc))
    if isinstance(source, Path) and plugins == [""]:
        try:  # the streaming reader needs File Meta and a plain encoding: retry from a full read
            return pixel_array(_full_dataset(path, header), index=0)
        except BaseException as exc:
            if not _is_codec_failure(exc):
                raise
            failures = [("", exc)]
    reason = _decode_failure_reason(transfer_syntax, header, failures)
    raise PixelDecodeError(reason, path=path) from failures[-1][1]


#: JPEG transfer syntaxes whose stream header (SOF) is checked before GDCM sees them.
JPEG_LOSSY_OR_LOSSLESS = frozenset(
    {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"}
)
JPEG_LS = frozenset({"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"})
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7})
_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})


def jpeg_frame_header(stream: bytes) -> tuple[int, int, int, int]:
    """(precision, rows, columns, components) from the SOF segment of a JPEG / JPEG-LS stream.

    Raises ValueError when the stream has no SOI or no readable SOF before its first scan.
    """
    if len(stream) < 4 or stream[0] != 0xFF or stream[1] != 0xD8:
        raise ValueError("JPEG stream does not start with SOI")
    pos = 2
    while pos + 4 <= len(stream):
        if stream[pos] != 0xFF:
            raise ValueError(f"JPEG marker expected at byte {pos}")
        marker = stream[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE_MARKERS:
            pos += 2
            continue
        length = int.from_bytes(stream[pos + 2 : pos + 4], "big")
        if marker in _SOF_MARKERS:
            if length < 8 or pos + 10 > len(stream):
                raise ValueError("JPEG SOF segment is cut short")
            rows = int.from_bytes(stream[pos + 5 : pos + 7], "big")
            columns = int.from_bytes(stream[pos + 7 : pos + 9], "big")
            return stream[pos + 4], rows, columns, stream[pos + 9]
        if marker in (0xDA, 0xD9) or length < 2:  # scan or end before any SOF
            break
        pos += 2 + length
    raise ValueError("JPEG stream has no frame header (SOF)")


def check_jpeg_stream(dataset: Dataset) -> None:
    """Raise ValueError unless the first frame's JPEG header agrees with the DICOM header.

    GDCM aborts the process (a C++ assertion) when, e.g., Bits Stored is below the JPEG
    precision, Bits Allocated is 32/64, or Rows/Columns exceed the coded size; such files
    are refused here instead.
    """
    transfer_syntax = str(dataset.file_meta.get("TransferSyntaxUID", ""))
    if transfer_syntax not in JPEG_LOSSY_OR_LOSSLESS | JPEG_LS:
        raise ValueError(f"GDCM is only used here for JPEG / JPEG-LS, not {transfer_syntax}")
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    stream = get_frame(dataset.PixelData, 0, number_of_frames=max(1, frames))
    precision, rows, columns, components = jpeg_frame_header(stream)
    expected_rows, expected_columns = int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0)
    if columns != expected_columns or (rows and rows != expected_rows):
        raise ValueError(f"JPEG stream is {columns}x{rows}, the header says {expected_columns}x{expected_rows}")
    if components != int(dataset.get("SamplesPerPixel", 1) or 1):
        raise ValueError(f"JPEG stream has {components} component(s), Samples per Pixel disagrees")
    bits_allocated = int(dataset.get("BitsAllocated", 0) or 0)
    bits_stored = int(dataset.get("BitsStored", 0) or 0)
    if bits_allocated not in (8, 16) or not 2 <= precision <= bits_allocated:
        raise ValueError(f"JPEG precision {precision} does not fit Bits Allocated {bits_allocated}")
    if not 1 <= bits_stored <= bits_allocated:
        raise ValueError(f"Bits Stored {bits_stored} does not fit Bits Allocated {bits_allocated}")
    if transfer_syntax in JPEG_LOSSY_OR_LOSSLESS and bits_stored < precision <= 8:
        # (16-bit streams with Bits Stored 12 are common and decode fine; 8-bit ones abort.)
        raise ValueError(f"Bits Stored {bits_stored} is below the 8-bit JPEG precision {precision}")


#: Transfer syntaxes whose 12-bit form needs the GPL-licensed pylibjpeg-libjpeg, not shipped.
_JPEG_12_BIT = {"1.2.840.10008.1.2.4.51"}


def _decode_failure_reason(transfer_syntax: str, header: Dataset, failures: list[tuple[str, BaseException]]) -> str:
    """One readable line: transfer syntax name + the decoders' (shortened) complaints."""
    name = pydicom.uid.UID(transfer_syntax).name if transfer_syntax else "no transfer syntax"
    try:
        bits_stored = int(header.get("BitsStored", 8) or 8)
    except (TypeError, ValueError):
        bits_stored = 8
    if transfer_syntax in _JPEG_12_BIT and bits_stored > 8:
        return f"unsupported: {name} with {bits_stored} bits needs a 12-bit JPEG decoder (not installed)"
    detail = "; ".join(f"{plugin + ': ' if plugin else ''}{type(exc).__name__}: {exc}" for plugin, exc in failures)
    detail = " ".join(detail.split())
    if len(detail) > 300:
        detail = detail[:297] + "..."
    return f"cannot decode pixel data ({name}): {detail}"
