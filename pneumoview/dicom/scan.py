"""Folder scan: header-only DICOM reads grouped patient -> study -> series -> image.

Every file under the given folders is either an :class:`ImageRecord` (a readable DICOM
image header, read with ``stop_before_pixels``) or a :class:`ScanProblem` (path + reason):
nothing is skipped silently and one bad file never stops the rest of the folder.
Files are only ever opened read-only, with bounded reads (:mod:`pneumoview.dicom.readonly`).
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.multival import MultiValue

from pneumoview.dicom.files import walk_files
from pneumoview.dicom.pictures import NO_DICOM_HEADER, is_picture_file, picture_header
from pneumoview.dicom.readonly import (
    HEADER_INFLATE_CAP,
    is_deflated,
    looks_like_bare_dicom,
    open_readonly,
    read_deflated,
)
from pneumoview.errors import DicomReadError, NotRegularFileError

#: Media Storage Directory Storage (a DICOMDIR index, not an image).
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"

#: Problem codes of :class:`ScanProblem`.
PROBLEM_UNREADABLE = "unreadable"  # not DICOM, truncated, corrupt, or no permission
PROBLEM_DICOMDIR = "dicomdir"  # a DICOMDIR index: its images are found by walking the folder
PROBLEM_NO_IMAGE = "no-image"  # valid DICOM without an image (report, presentation state, ...)
PROBLEM_NOT_REGULAR = NotRegularFileError.code  # a FIFO, device or socket: never opened
#: Problem codes that are errors (the others are DICOM files that simply hold no image).
ERROR_CODES = frozenset({PROBLEM_UNREADABLE, PROBLEM_NOT_REGULAR})

#: Exceptions pydicom's header parser is known to raise on corrupt input (found by the fuzz tests).
PARSER_ERRORS: tuple[type[BaseException], ...] = (
    InvalidDicomError,
    BytesLengthException,
    OSError,
    EOFError,
    ValueError,  # bad lengths / VRs / character sets
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    NotImplementedError,
    OverflowError,
    UnicodeError,
    struct.error,
    zlib.error,  # deflated data sets (readonly.InflateError, a ValueError, wraps it; kept for safety)
    MemoryError,  # a corrupt length asking for gigabytes
    RecursionError,  # corrupt, deeply nested sequences
)


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One DICOM image, from its header only (tags cited on each field)."""

    path: Path
    sop_instance_uid: str  # (0008,0018)
    sop_class_uid: str  # (0008,0016)
    patient_id: str  # (0010,0020)
    patient_name: str  # (0010,0010), DICOM PN as text ("Family^Given")
    patient_sex: str  # (0010,0040)
    patient_birth_date: str  # (0010,0030) YYYYMMDD
    study_uid: str  # (0020,000D)
    study_date: str  # (0008,0020) YYYYMMDD
    study_time: str  # (0008,0030)
    study_description: str  # (0008,1030)
    accession: str  # (0008,0050)
    series_uid: str  # (0020,000E)
    series_number: int | None  # (0020,0011)
    series_description: str  # (0008,103E)
    modality: str  # (0008,0060)
    view_position: str  # (0018,5101)
    body_part: str  # (0018,0015)
    image_laterality: str  # (0020,0062)
    rows: int  # (0028,0010)
    columns: int  # (0028,0011)
    photometric: str  # (0028,0004)
    bits_stored: int  # (0028,0101)
    number_of_frames: int  # (0028,0008), 1 when absent
    pixel_spacing: tuple[float, float] | None  # (0028,0030) else (0018,1164); None if absent or unusable (0\0)
    transfer_syntax: str  # (0002,0010)
    instance_number: int | None = None  # (0020,0013)
    protocol_name: str = ""  # (0018,1030)
    samples_per_pixel: int = 1  # (0028,0002)
    image_type: tuple[str, ...] = ()  # (0008,0008)
    issuer_of_patient_id: str = ""  # (0010,0021)
    picture_format: str = ""  # "PNG" / "JPEG" / "TIFF": a picture without a DICOM header (dicom.pictures)


@dataclass(frozen=True, slots=True)
class ScanProblem:
    """A file that gave no image: ``reason`` says why, ``code`` is one of ``PROBLEM_*``."""

    path: Path
    reason: str
    code: str = PROBLEM_UNREADABLE


@dataclass
class Series:
    """Images sharing a SeriesInstanceUID (0020,000E), sorted by instance number then path."""

    series_uid: str
    series_number: int | None
    description: str
    modality: str
    images: list[ImageRecord] = field(default_factory=list)


@dataclass
class Study:
    """Series sharing a StudyInstanceUID (0020,000D)."""

    study_uid: str
    study_date: str
    study_time: str
    description: str
    accession: str
    series: list[Series] = field(default_factory=list)

    @property
    def images(self) -> list[ImageRecord]:
        return [image for series in self.series for image in series.images]


@dataclass
class Patient:
    """Studies sharing a PatientID (0010,0020) (or, lacking one, a PatientName)."""

    patient_id: str
    patient_name: str
    patient_sex: str
    patient_birth_date: str
    studies: list[Study] = field(default_factory=list)

    @property
    def images(self) -> list[ImageRecord]:
        return [image for study in self.studies for image in study.images]


@dataclass
class ScanResult:
    """Everything a scan found: images, and one problem per file that gave no image."""

    images: list[ImageRecord]
    problems: list[ScanProblem]
    cancelled: bool = False  # True if ``cancel()`` stopped the scan: the lists are partial
    files_seen: int = 0

    def patients(self) -> list[Patient]:
        """Group :attr:`images` patient -> study -> series (stable, sorted) order."""
        return group_records(self.images)

    @property
    def errors(self) -> list[ScanProblem]:
        """Problems that are real errors (not DICOMDIRs or image-less DICOM objects)."""
        return [p for p in self.problems if p.code in ERROR_CODES]


def iter_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Files under ``paths``: :func:`pneumoview.dicom.files.walk_files` (the one walker and its rule)."""
    return walk_files(paths)


#: Specific Character Set (0008,0005) values whose text Python decodes directly.
_ENCODINGS = {
    "": "latin_1",  # default repertoire (ASCII); latin-1 never fails on stray bytes
    "ISO_IR 6": "latin_1",
    "ISO_IR 100": "latin_1",
    "ISO_IR 101": "iso8859_2",
    "ISO_IR 109": "iso8859_3",
    "ISO_IR 110": "iso8859_4",
    "ISO_IR 144": "iso8859_5",
    "ISO_IR 127": "iso8859_6",
    "ISO_IR 126": "iso8859_7",
    "ISO_IR 138": "iso8859_8",
    "ISO_IR 148": "iso8859_9",
    "ISO_IR 166": "tis_620",
    "ISO_IR 192": "utf_8",
    "GB18030": "gb18030",
    "GBK": "gbk",
}
#: VRs whose text depends on the character set; all others are in the default repertoire.
_CHARSET_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC"})


class _HeaderFields:
    """Reads the few header values a record needs straight from pydicom's raw elements.

    pydicom converts raw values lazily, with validation, at ~50 us an element; decoding the
    bytes here is ~20x faster and keeps a 10,000-file scan well inside its time budget.
    Anything unusual (an ISO 2022 character set, an element pydicom already converted, a
    VR without an explicit value) goes through pydicom's own conversion instead.
    """

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        charset = self._raw_text(0x00080005, "latin_1")
        if charset is None:  # already converted by pydicom
            value = ds.get("SpecificCharacterSet", "")
            charset = value if isinstance(value, str) else "\\".join(value)
        self.encoding: str | None = _ENCODINGS.get(charset.strip())

    def _raw_text(self, tag: int, encoding: str) -> str | None:
        elem = self.ds.get_item(tag)
        if elem is None:
            return ""
        if not isinstance(elem, RawDataElement):
            return None
        return (elem.value or b"").decode(encoding, "replace").strip(" \x00")

    def text(self, tag: int) -> str:
        """Value as DICOM text (multiple values joined by "\\"), stripped; "" if absent."""
        elem = self.ds.get_item(tag)
        if elem is None:
            return ""
        if isinstance(elem, RawDataElement) and elem.VR not in ("SQ", "UN"):
            if elem.VR in _CHARSET_VRS or elem.VR is None:
                if self.encoding is not None:
                    return (elem.value or b"").decode(self.encoding, "replace").strip(" \x00")
            else:
                return (elem.value or b"").decode("latin_1", "replace").strip(" \x00")
        value = self.ds[tag].value  # pydicom's conversion (may raise on corrupt data)
        if value is None:
            return ""
        if isinstance(value, (list, tuple, MultiValue)):
            return "\\".join(str(v) for v in value).strip()
        return str(value).strip()

    def person_name(self, tag: int) -> str:
        """A PN value as pydicom prints it: empty trailing component groups ("=") dropped."""
        return self.text(tag).rstrip("=").strip()

    def unsigned(self, tag: int) -> int:
        """A US value (Rows, Columns, Bits Stored, ...); 0 if absent or unreadable."""
        elem = self.ds.get_item(tag)
        if elem is None:
            return 0
        if isinstance(elem, RawDataElement) and elem.VR in ("US", None) and elem.value and len(elem.value) >= 2:
            return int.from_bytes(elem.value[:2], "little" if elem.is_little_endian else "big")
        value = self.ds[tag].value
        if isinstance(value, (list, tuple, MultiValue)):
            value = value[0] if len(value) else 0
        try:
            return int(value or 0)
        except (TypeError, ValueError, OverflowError):
            return 0

    def integer(self, tag: int) -> int | None:
        """An IS value (Series Number, Number of Frames, ...); None if absent or not a number."""
        text = self.text(tag).split("\\")[0].strip()
        if not text:
            return None
        try:
            return int(text)
        except ValueError:
            try:
                return int(float(text))
            except (ValueError, OverflowError):
                return None

    def spacing(self) -> tuple[float, float] | None:
        """PixelSpacing (0028,0030), else ImagerPixelSpacing (0018,1164); None if absent or not > 0."""
        for tag in (0x00280030, 0x00181164):
            parts = self.text(tag).split("\\")
            if len(parts) != 2:
                continue
            try:
                row, col = float(parts[0]), float(parts[1])
            except ValueError:
                continue
            if row > 0 and col > 0 and math.isfinite(row) and math.isfinite(col):
                return (row, col)
        return None


def read_header(path: Path) -> Dataset:
    """Header of ``path`` (``stop_before_pixels``), opened read-only with bounded reads.

    Only regular files are opened (NotRegularFileError otherwise). A deflated file is inflated
    lazily up to its Pixel Data, at most :data:`~pneumoview.dicom.readonly.HEADER_INFLATE_CAP`.

    Files without the 128-byte preamble are accepted; junk is not (InvalidDicomError).
    Other pydicom parser errors propagate: callers turn them into PneumoViewErrors.
    """
    with open_readonly(path) as handle:
        if is_deflated(handle):  # inflate only the header, with a cap (PS3.5 A.5)
            return read_deflated(handle, stop_before_pixels=True, cap=HEADER_INFLATE_CAP)
        try:
            return pydicom.dcmread(handle, stop_before_pixels=True)
        except InvalidDicomError:
            pass  # no preamble / "DICM": retry leniently below, then judge what came out
        handle.seek(0)
        if not looks_like_bare_dicom(handle.read(8)):
            raise InvalidDicomError("not a DICOM file (no preamble and no DICOM tag at the start)")
        handle.seek(0)
        ds = pydicom.dcmread(handle, stop_before_pixels=True, force=True)
    # A forced read of a non-DICOM file yields garbage tags; a real preamble-less file
    # has the identifying attributes of a composite object.
    if not any(tag in ds for tag in (0x00080016, 0x00080018, 0x0020000D)) and "DirectoryRecordSequence" not in ds:
        raise InvalidDicomError("not a DICOM file (no preamble and no SOP Class/Instance or Study UID)")
    return ds


def header_read_error(exc: BaseException, path: Path) -> DicomReadError:
    """The per-file error for a header that could not be read (one of :data:`PARSER_ERRORS`)."""
    if isinstance(exc, InvalidDicomError):
        return DicomReadError(f"not DICOM: {exc}", path=path)
    if isinstance(exc, IsADirectoryError):
        return DicomReadError("is a folder", path=path)
    if isinstance(exc, PermissionError):
        return DicomReadError("permission denied", path=path)
    if isinstance(exc, FileNotFoundError):
        return DicomReadError("file not found", path=path)
    return DicomReadError(f"corrupt DICOM header: {type(exc).__name__}: {exc}", path=path)


def read_record(path: str | os.PathLike[str]) -> ImageRecord:
    """Read one file's header (``stop_before_pixels``) into an :class:`ImageRecord`.

    Raises :class:`DicomReadError` for anything that is not a readable DICOM image header;
    its ``tag`` is ``"dicomdir"`` for a DICOMDIR and ``"no-image"`` for DICOM without Rows/Columns.
    """
    path = Path(path)
    try:
        ds = read_header(path)
        return _record_from_dataset(path, ds)
    except DicomReadError:
        raise
    except PARSER_ERRORS as exc:
        raise header_read_error(exc, path) from exc


def _record_from_dataset(path: Path, ds: Dataset) -> ImageRecord:
    fields = _HeaderFields(ds)
    meta = getattr(ds, "file_meta", None)
    meta_fields = _HeaderFields(meta) if meta is not None else None
    sop_class = fields.text(0x00080016) or (meta_fields.text(0x00020002) if meta_fields else "")
    if sop_class == DICOMDIR_SOP_CLASS or 0x00041220 in ds:  # DirectoryRecordSequence
        raise DicomReadError("DICOMDIR (a directory index, not an image)", path=path, tag="dicomdir")
    rows = fields.unsigned(0x00280010)
    columns = fields.unsigned(0x00280011)
    if rows <= 0 or columns <= 0:
        what = pydicom.uid.UID(sop_class).name if sop_class else "unknown SOP class"
        if "Image Storage" in what or len(ds) == 0:
            # An image object without its image attributes: cut short or corrupt.
            raise DicomReadError(f"incomplete {what} header: no Rows/Columns (truncated or corrupt file?)", path=path)
        raise DicomReadError(f"DICOM without an image (no Rows/Columns): {what}", path=path, tag="no-image")
    transfer_syntax = meta_fields.text(0x00020010) if meta_fields else ""
    if not transfer_syntax:
        implicit, little = ds.original_encoding
        transfer_syntax = (
            pydicom.uid.ImplicitVRLittleEndian
            if implicit or implicit is None
            else pydicom.uid.ExplicitVRLittleEndian
            if little
            else pydicom.uid.ExplicitVRBigEndian
        )
    return ImageRecord(
        path=path,
        sop_instance_uid=fields.text(0x00080018) or (meta_fields.text(0x00020003) if meta_fields else ""),
        sop_class_uid=sop_class,
        patient_id=fields.text(0x00100020),
        patient_name=fields.person_name(0x00100010),
        patient_sex=fields.text(0x00100040),
        patient_birth_date=fields.text(0x00100030),
        study_uid=fields.text(0x0020000D),
        study_date=fields.text(0x00080020),
        study_time=fields.text(0x00080030),
        study_description=fields.text(0x00081030),
        accession=fields.text(0x00080050),
        series_uid=fields.text(0x0020000E),
        series_number=fields.integer(0x00200011),
        series_description=fields.text(0x0008103E),
        modality=fields.text(0x00080060).upper(),
        view_position=fields.text(0x00185101).upper(),
        body_part=fields.text(0x00180015).upper(),
        image_laterality=fields.text(0x00200062).upper(),
        rows=rows,
        columns=columns,
        photometric=fields.text(0x00280004).upper(),
        bits_stored=fields.unsigned(0x00280101) or fields.unsigned(0x00280100),
        number_of_frames=max(1, fields.integer(0x00280008) or 1),
        pixel_spacing=fields.spacing(),
        transfer_syntax=str(transfer_syntax),
        instance_number=fields.integer(0x00200013),
        protocol_name=fields.text(0x00181030),
        samples_per_pixel=fields.unsigned(0x00280002) or 1,
        image_type=tuple(v.strip() for v in fields.text(0x00080008).split("\\") if v.strip()),
        issuer_of_patient_id=fields.text(0x00100021),
    )


def scan(
    paths: Iterable[str | os.PathLike[str]],
    *,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    pictures: bool = False,
) -> ScanResult:
    """Read every file's header under ``paths``; ``progress(done, total)`` after each file.

    With ``pictures``, PNG/JPEG/TIFF files are images too (:func:`read_picture_record`; the app's
    browser); without, they are problems like any other file that is not DICOM (the command line).

    When ``cancel()`` returns True the scan stops and returns what it has, with
    ``cancelled=True``. Unreadable files become :class:`ScanProblem` entries.
    """
    files = list(iter_files(paths))
    total = len(files)
    images: list[ImageRecord] = []
    problems: list[ScanProblem] = []
    cancelled = False
    done = 0
    for path in files:
        if cancel is not None and cancel():
            cancelled = True
            break
        try:
            images.append(read_picture_record(path) if pictures and is_picture_file(path) else read_record(path))
        except NotRegularFileError as exc:
            problems.append(ScanProblem(path=path, reason=exc.reason, code=PROBLEM_NOT_REGULAR))
        except DicomReadError as exc:
            code = exc.tag if exc.tag in (PROBLEM_DICOMDIR, PROBLEM_NO_IMAGE) else PROBLEM_UNREADABLE
            problems.append(ScanProblem(path=path, reason=exc.reason, code=code))
        done += 1
        if progress is not None:
            progress(done, total)
    return ScanResult(images=images, problems=problems, cancelled=cancelled, files_seen=done)


def group_records(records: Iterable[ImageRecord]) -> list[Patient]:
    """Group records patient -> study -> series; missing UIDs group under "" (shown as unknown)."""
    patients: dict[str, Patient] = {}
    studies: dict[tuple[str, str], Study] = {}
    series_map: dict[tuple[str, str, str], Series] = {}
    for r in records:
        patient_key = r.patient_id or f"name:{r.patient_name}"
        patient = patients.get(patient_key)
        if patient is None:
            patient = patients[patient_key] = Patient(r.patient_id, r.patient_name, r.patient_sex, r.patient_birth_date)
        study_key = (patient_key, r.study_uid)
        study = studies.get(study_key)
        if study is None:
            study = studies[study_key] = Study(
                r.study_uid, r.study_date, r.study_time, r.study_description, r.accession
            )
            patient.studies.append(study)
        series_key = (patient_key, r.study_uid, r.series_uid)
        series = series_map.get(series_key)
        if series is None:
            series = series_map[series_key] = Series(r.series_uid, r.series_number, r.series_description, r.modality)
            study.series.append(series)
        series.images.append(r)
    for patient in patients.values():
        patient.studies.sort(key=lambda s: (s.study_date, s.study_time, s.study_uid))
        for study in patient.studies:
            study.series.sort(key=lambda s: (s.series_number is None, s.series_number or 0, s.series_uid))
            for series in study.series:
                series.images.sort(key=lambda i: (i.instance_number is None, i.instance_number or 0, str(i.path)))
    return sorted(patients.values(), key=lambda p: (p.patient_name.lower(), p.patient_id))


def read_picture_record(path: str | os.PathLike[str]) -> ImageRecord:
    """The scan's record for a picture (header only; raises DicomReadError, see :func:`picture_header`)."""
    path = Path(path)
    fmt, width, height, bits = picture_header(path)
    return ImageRecord(
        path=path,
        sop_instance_uid="",
        sop_class_uid="",
        patient_id="",
        patient_name=NO_DICOM_HEADER,
        patient_sex="",
        patient_birth_date="",
        study_uid="",
        study_date="",
        study_time="",
        study_description=NO_DICOM_HEADER,
        accession="",
        series_uid="",
        series_number=None,
        series_description="PNG / JPEG / TIFF pictures",
        modality="",
        view_position="",
        body_part="",
        image_laterality="",
        rows=height,
        columns=width,
        photometric="",
        bits_stored=bits,
        number_of_frames=1,
        pixel_spacing=None,
        transfer_syntax="",
        picture_format=fmt,
    )
