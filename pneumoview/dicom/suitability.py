"""Which images the model may judge: frontal (PA/AP) chest CR/DX radiographs and their secondary captures.

Everything else stays viewable but gets a stable reason code, the way CAD products report
"invalid view" or "unsupported file". The decision uses header tags only: Modality
(0008,0060), SOP Class UID (0008,0016), Body Part Examined (0018,0015), View Position
(0018,5101), Image Type (0008,0008), descriptions (0008,1030 / 0008,103E / 0018,1030) and
the matrix size (0028,0010/0011).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pneumoview.dicom.scan import ImageRecord
from pneumoview.errors import PneumoViewError

#: Reason codes (stable: stored with results and shown in the UI).
UNSUPPORTED_MODALITY = "unsupported-modality"
NOT_CHEST = "not-chest"
LATERAL_VIEW = "lateral-view"
UNSUPPORTED_VIEW = "unsupported-view"
FOR_PROCESSING = "for-processing"
TOO_SMALL = "too-small"
UNKNOWN_BODY_PART = "unknown-body-part"
UNSUPPORTED_FILE = "unsupported-file"

CR_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1"
DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
DX_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
#: Secondary Capture Image Storage and its multi-frame variants (PS3.4 B.5).
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX"})
SECONDARY_CAPTURE_MODALITIES = frozenset({"OT", "SC", "CR", "DX", ""})
FRONTAL_VIEWS = frozenset({"PA", "AP"})
LATERAL_VIEWS = frozenset({"LL", "RL", "LAT", "LATERAL", "LLAT", "RLAT"})
CHEST_BODY_PARTS = frozenset({"CHEST", "THORAX", "LUNG", "LUNGS", "CHEST_LAT", "CHESTPA", "THORAX PA"})
#: Words in descriptions that say "chest" (several languages found in clinics' headers).
_CHEST_WORDS = re.compile(r"\b(CHEST|THORAX|TORAX|THX|CXR|LUNGS?|POUMONS?|BRUSTKORB|TORACE|TORAKS)\b")
_LATERAL_WORDS = re.compile(r"\b(LAT|LATERAL|LATERALE|SEITLICH|PROFIL|LL|RL)\b")
#: Smallest side (pixels) a radiograph must have to be judged.
MIN_SIDE = 256


@dataclass(frozen=True)
class Suitability:
    """``diagnosable`` or not; ``code`` (one of the constants above) says why not."""

    diagnosable: bool
    code: str | None
    reason: str
    cautions: tuple[str, ...] = ()  # diagnosable, but the header leaves something unstated


def _words(record: ImageRecord) -> str:
    return " ".join((record.study_description, record.series_description, record.protocol_name)).upper()


def assess(record: ImageRecord) -> Suitability:
    """Decide from the header whether ``record`` is a frontal chest radiograph the model may judge."""
    if record.picture_format:  # PNG/JPEG/TIFF (pneumoview.dicom.pictures): nothing in a header to check
        return _picture_suitability(record)
    modality = record.modality.upper()
    sop = record.sop_class_uid
    secondary = sop.startswith(SECONDARY_CAPTURE_PREFIX)
    text = _words(record)
    if sop == DX_FOR_PROCESSING or "FOR PROCESSING" in {t.upper() for t in record.image_type}:
        return Suitability(
            False, FOR_PROCESSING, "DX 'for processing' (raw detector) image: needs the 'for presentation' version"
        )
    if not secondary and modality not in RADIOGRAPH_MODALITIES:
        return Suitability(
            False,
            UNSUPPORTED_MODALITY,
            f"modality {modality or 'not stated'}: only CR/DX chest radiographs are analysed",
        )
    if secondary and modality not in SECONDARY_CAPTURE_MODALITIES:
        return Suitability(
            False, UNSUPPORTED_MODALITY, f"secondary capture of a {modality} image: only chest radiographs are analysed"
        )
    cautions: list[str] = []
    body = record.body_part.upper().strip()
    if body:
        if body not in CHEST_BODY_PARTS and not _CHEST_WORDS.search(body.replace("_", " ")):
            return Suitability(False, NOT_CHEST, f"body part {body}: only chest radiographs are analysed")
    elif not _CHEST_WORDS.search(text):
        if secondary:
            return Suitability(
                False, UNKNOWN_BODY_PART, "secondary capture that does not say it shows a chest radiograph"
            )
        cautions.append("body part not recorded: check that this is a chest radiograph")
    view = record.view_position.upper().strip()
    if view in LATERAL_VIEWS:
        return Suitability(False, LATERAL_VIEW, f"view position {view}: lateral views are not analysed")
    if view and view not in FRONTAL_VIEWS:
        return Suitability(False, UNSUPPORTED_VIEW, f"view position {view}: only frontal PA/AP views are analysed")
    if not view:
        if _LATERAL_WORDS.search(text):
            return Suitability(False, LATERAL_VIEW, "description says lateral: lateral views are not analysed")
        cautions.append("view position not recorded: check that this is a frontal (PA/AP) view")
    if min(record.rows, record.columns) < MIN_SIDE:
        return Suitability(
            False,
            TOO_SMALL,
            f"image is {record.columns}x{record.rows}: too small to analyse (needs {MIN_SIDE} px a side)",
        )
    kind = "secondary capture of a chest radiograph" if secondary else f"{view or 'frontal'} chest {modality}"
    return Suitability(True, None, kind, tuple(cautions))


def _picture_suitability(record: ImageRecord) -> Suitability:
    """A picture without a DICOM header: analysed when large enough, with a caution that nothing says what it shows."""
    if min(record.rows, record.columns) < MIN_SIDE:
        return Suitability(
            False,
            TOO_SMALL,
            f"image is {record.columns}x{record.rows}: too small to analyse (needs {MIN_SIDE} px a side)",
        )
    caution = "no DICOM header: check that this is a frontal (PA/AP) chest radiograph"
    return Suitability(True, None, f"{record.picture_format} picture without a DICOM header", (caution,))


def unsupported_file(error: PneumoViewError) -> Suitability:
    """The verdict for a file whose pixels could not be read: viewable at most, never judged."""
    return Suitability(False, UNSUPPORTED_FILE, f"unsupported file: {error.reason}")
